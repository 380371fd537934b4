//! The identity file older versions kept per node (`external-users.json`): users minted by a
//! trusted backend or vouched for by the login hook. Identities now live in each session's
//! record in the store; this file is only read, once at start, so sessions minted before the
//! upgrade keep being renewed on the node that minted them. Nothing writes it any more.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::users::Identity;

/// File in the data dir holding the identities.
pub const FILE: &str = "external-users.json";

#[derive(Debug, Deserialize)]
struct Entry {
    identity: Identity,
}

/// Identities read from an old `external-users.json`, by `sub`.
#[derive(Default)]
pub struct Identities {
    map: HashMap<String, Identity>,
}

impl Identities {
    /// Identities saved in `data_dir` by an older version (none is fine). Read before the
    /// server serves, so the blocking read never holds up a request.
    pub fn open(data_dir: &Path) -> Result<Identities, String> {
        let file = data_dir.join(FILE);
        match std::fs::read(&file) {
            Ok(bytes) => {
                let saved: HashMap<String, Entry> = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                Ok(Identities {
                    map: saved.into_iter().map(|(k, e)| (k, e.identity)).collect(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Identities::default()),
            Err(e) => Err(format!("{}: {e}", file.display())),
        }
    }

    /// The identity the old file registered for `sub`.
    pub fn get(&self, sub: &str) -> Option<Identity> {
        self.map.get(sub).cloned()
    }
}
