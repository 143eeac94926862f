//! Black-box tests over HTTP against the real SmolLM2 model (and the CLI binary).

mod chat;
mod cli;
mod common;
mod completions;
mod concurrency;
mod embeddings;
mod errors;
mod loading;
mod models;
mod quantize;
mod run;
mod security;
