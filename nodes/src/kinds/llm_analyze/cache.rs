//! The on-disk response cache: one small JSON file per request, named by the SHA-256 of the
//! whole request body (model, prompt text with its frame list, image bytes as sent, and the
//! sampling options), so a re-run pays only for what changed. Files are written under a
//! temporary name and renamed, so concurrent writers and interrupted runs never leave a torn
//! entry; an unreadable entry counts as a miss.

use super::client::Usage;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A cached answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub content: String,
    pub usage: Option<Usage>,
}

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens (creating) the cache folder.
    pub fn open(dir: &Path) -> Result<Cache, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the cache folder `{}`: {e}", dir.display()))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    /// The key of a request body.
    pub fn key(body: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(b"vidflow-llm-cache-v1\0");
        h.update(body);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.json"))
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        let text = std::fs::read_to_string(self.path(key)).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let content = v.get("content")?.as_str()?.to_string();
        let usage = v.get("usage").and_then(Usage::from_json);
        Some(Entry { content, usage })
    }

    pub fn put(&self, key: &str, model: &str, entry: &Entry) -> Result<(), String> {
        let path = self.path(key);
        let dir = path.parent().expect("a cache path has a folder");
        std::fs::create_dir_all(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
        let body = json!({
            "model": model,
            "content": entry.content,
            "usage": entry.usage.map(|u| u.to_json()),
        });
        let temp = dir.join(format!(
            ".{key}.{}.{:?}.partial",
            std::process::id(),
            std::thread::current().id()
        ));
        let text = serde_json::to_vec(&body).expect("JSON value serialises");
        std::fs::write(&temp, text).map_err(|e| format!("`{}`: {e}", temp.display()))?;
        std::fs::rename(&temp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("`{}`: {e}", path.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_misses() {
        let dir =
            std::env::temp_dir().join(format!("vidflow-llm-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cache::open(&dir).unwrap();
        let k = Cache::key(b"{\"model\":\"m\"}");
        assert_eq!(k.len(), 64);
        assert_ne!(k, Cache::key(b"{\"model\":\"n\"}"));
        assert_eq!(c.get(&k), None);
        let e = Entry {
            content: "{\"analysis\": \"x\"}".into(),
            usage: Some(Usage {
                prompt: 10,
                completion: 5,
                total: 15,
            }),
        };
        c.put(&k, "m", &e).unwrap();
        assert_eq!(c.get(&k), Some(e));
        std::fs::write(c.path(&k), "torn").unwrap();
        assert_eq!(c.get(&k), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
