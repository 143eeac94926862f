//! `inferno run`: one-shot answers (argument and stdin), against a running server with
//! `--url`, and the interactive chat driven through a pseudo-terminal.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{SERIAL, model, server};

const BIN: &str = env!("CARGO_BIN_EXE_inferno");

/// `inferno run` on the test model with an empty models dir, greedy, at most `max_tokens`.
fn run_command(max_tokens: &str) -> Command {
    let empty = tempfile::tempdir().unwrap().keep();
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .arg(&model().path)
        .args([
            "--max-tokens",
            max_tokens,
            "--temperature",
            "0",
            "--parallel",
            "1",
        ])
        .arg("--models-dir")
        .arg(empty)
        .env("OMP_WAIT_POLICY", "passive")
        .env("NO_COLOR", "1");
    command
}

#[test]
fn one_shot_prints_only_the_answer() {
    let output = run_command("8")
        .arg("What is the capital of France?")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("Paris"), "{stdout:?}");
    assert!(!stdout.contains("INFO"), "logs stay off stdout: {stdout:?}");
}

#[test]
fn the_prompt_can_come_from_stdin_and_verbose_adds_timings() {
    let mut child = run_command("8")
        .args(["-", "--verbose"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("Paris"));
    assert!(stderr.contains("tokens/s"), "{stderr}");
}

#[tokio::test]
async fn url_talks_to_a_running_server() {
    let _serial = SERIAL.lock().await;
    let server = server();
    let (base, id) = (server.base.clone(), server.model.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "run",
                "--url",
                &base,
                &id,
                "--max-tokens",
                "8",
                "--temperature",
                "0",
            ])
            .arg("What is the capital of France?")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Paris"), "{stdout:?}");

    let bad = Command::new(BIN)
        .args(["run", "--url", &server.base, "no-such-model", "hi"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn interactive_chat_answers_and_bye_leaves() {
    let mut command = run_command("8");
    command.env("HOME", tempfile::tempdir().unwrap().keep());
    let mut session = rexpect::session::spawn_command(command, Some(60_000)).unwrap();
    session.exp_string(">>> ").unwrap();
    session.send_line("/set max_tokens 8").unwrap();
    session.exp_string("max_tokens = 8").unwrap();
    session.exp_string(">>> ").unwrap();
    session.send_line("What is the capital of France?").unwrap();
    session.exp_string("Paris").unwrap();
    session.exp_string(">>> ").unwrap();
    session.send_line("/stats").unwrap();
    session.exp_string("tokens/s").unwrap();
    session.send_line("/bye").unwrap();
    session.exp_eof().unwrap();
}

#[test]
fn ctrl_c_stops_the_answer_not_the_chat() {
    let mut command = run_command("3000");
    command.env("HOME", tempfile::tempdir().unwrap().keep());
    let mut session = rexpect::session::spawn_command(command, Some(60_000)).unwrap();
    session.exp_string(">>> ").unwrap();
    session
        .send_line("Write a very long essay about the history of Rome.")
        .unwrap();
    // The echo of the question, some of the answer, then Ctrl-C.
    session.exp_string("history of Rome.").unwrap();
    session.exp_regex("[A-Za-z]{4}").unwrap();
    session.send_control('c').unwrap();
    session.exp_string("(stopped)").unwrap();
    session.exp_string(">>> ").unwrap();
    session.send_line("/bye").unwrap();
    session.exp_eof().unwrap();
}
