//! Identities of users who are not in the users file: minted by a trusted backend
//! (`POST /admin/sessions`) or vouched for by `--login-hook`. Pushes re-issue tokens long
//! after the login, so the service must remember what to sign; kept per `sub`, newest wins,
//! and saved to `external-users.json` in the data dir so a restart keeps renewing them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::clock::{now_ms, Millis};
use crate::users::Identity;

/// File in the data dir holding the identities.
pub const FILE: &str = "external-users.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    identity: Identity,
    /// When this identity last opened a session: it is forgotten once every such session
    /// must have ended (`--refresh-max-ttl` later).
    at: Millis,
}

/// External identities by `sub`.
#[derive(Default)]
pub struct Identities {
    map: DashMap<String, Entry>,
    file: Option<PathBuf>,
    /// Serialises rewrites of the file.
    write: Mutex<()>,
}

impl Identities {
    /// Identities saved in `data_dir` (none yet is fine); later changes are saved there.
    pub fn open(data_dir: &Path) -> Result<Identities, String> {
        let file = data_dir.join(FILE);
        let mut map = DashMap::new();
        match std::fs::read(&file) {
            Ok(bytes) => {
                let saved: HashMap<String, Entry> = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                map.extend(saved);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", file.display())),
        }
        Ok(Identities {
            map,
            file: Some(file),
            write: Mutex::new(()),
        })
    }

    /// The identity last registered for `sub`.
    pub fn get(&self, sub: &str) -> Option<Identity> {
        self.map.get(sub).map(|e| e.identity.clone())
    }

    /// Remembers `who` (replacing older claims of the same `sub`) and saves the set.
    pub fn insert(&self, who: Identity) {
        self.map.insert(
            who.name.clone(),
            Entry {
                identity: who,
                at: now_ms(),
            },
        );
        self.save();
    }

    /// Forgets identities registered before `cutoff` (their sessions have all ended).
    pub fn prune(&self, cutoff: Millis) {
        let before = self.map.len();
        self.map.retain(|_, e| e.at >= cutoff);
        if self.map.len() != before {
            self.save();
        }
    }

    fn save(&self) {
        let Some(file) = &self.file else { return };
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot: HashMap<String, Entry> = self
            .map
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let tmp = file.with_extension("json.tmp");
        // Write then rename: a crash never leaves half a file. The process umask makes it 0600.
        let result = serde_json::to_vec(&snapshot)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = result {
            tracing::warn!(error = %e, file = %file.display(), "saving external identities failed");
        }
    }
}
