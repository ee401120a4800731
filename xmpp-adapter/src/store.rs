//! The durable state: one JSON file, replaced atomically (write a temporary
//! file, fsync, rename, fsync the directory), so a kill -9 leaves either the
//! old or the new state, never half of one.

use crate::engine::State;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: not a state file: {1}")]
    Format(String, serde_json::Error),
}

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(path: impl Into<PathBuf>) -> Store {
        Store { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state saved last; empty when there is no file yet.
    pub fn load(&self) -> Result<State, StoreError> {
        let name = self.path.display().to_string();
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Format(name, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(StoreError::Io(name, e)),
        }
    }

    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let name = self.path.display().to_string();
        let io = |e| StoreError::Io(name.clone(), e);
        let bytes = serde_json::to_vec(state).expect("state serialises");
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::engine::{S2w, S2wPhase};

    #[test]
    fn save_then_load() {
        let dir = std::env::temp_dir().join(format!("xmpp-adapter-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::new(dir.join("state.json"));
        assert_eq!(store.load().unwrap(), State::default());
        let mut st = State::default();
        let (c, a) = (
            Address::from_uri("sip:carol@example.com").unwrap(),
            Address::from_jid("alice@xmpp.example.org").unwrap(),
        );
        st.s2w.insert(
            crate::engine::pair_key(&c, &a),
            S2w {
                sip: c,
                xmpp: a,
                phase: S2wPhase::Approved,
                last_doc: None,
            },
        );
        store.save(&st).unwrap();
        assert_eq!(store.load().unwrap(), st);
        std::fs::write(store.path(), b"{not json").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Format(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
