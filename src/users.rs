//! The users directory: the TOML users file (or generated demo users), argon2id password
//! checks (bounded by [`HashGate`]), and admin role overrides cached from the store.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Memory all password hashes in flight may take together. One argon2id check with the
/// default parameters fills 19 MiB; unbounded, 40 parallel logins took 800 MB.
const HASH_MEMORY_BUDGET_KIB: u32 = 96 * 1024;

/// Logins that may wait for a hashing slot, per slot: with ~25 ms per hash, under a second
/// of waiting. Beyond it waiting would only add latency, so the client is told to retry
/// instead (503 + `Retry-After`).
const QUEUE_PER_SLOT: usize = 32;

/// Name of the generated demo users file in the data dir.
pub const DEMO_USERS_FILE: &str = "demo-users.toml";

/// One `[[user]]` table of the users file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    #[serde(default)]
    user: Vec<User>,
}

/// `sub` prefix of users minted with the service key (`POST /admin/sessions`): the app's own
/// `sub` follows it, so a minted user can never be taken for a users-file user of that name.
pub const MINTED: &str = "ext:";
/// `sub` prefix of users vouched for by `--login-hook`.
pub const HOOKED: &str = "hook:";
/// Longest `sub`, `name` or role accepted from a trusted backend or the login hook, in bytes.
pub const MAX_CLAIM: usize = 256;

/// Whether `sub` names a user from outside the users file (minted or hooked).
pub fn is_external(sub: &str) -> bool {
    sub.starts_with(MINTED) || sub.starts_with(HOOKED)
}

/// Checks a `sub`, `name` or role that came from outside (the app's backend or its login
/// hook). It is signed into tokens, shown in the admin console and written to logs, so it is
/// refused, not cleaned, when it is empty, longer than [`MAX_CLAIM`] bytes, has spaces at
/// either end, or holds control, format (bidi overrides, zero-width) or line/paragraph
/// separator characters: a `\n` would forge log lines, a U+202E reorder what an admin reads.
pub fn check_claim(what: &str, v: &str) -> Result<(), String> {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    if v.is_empty() || v.trim() != v {
        return Err(format!(
            "{what} must be non-empty, without spaces at either end"
        ));
    }
    if v.len() > MAX_CLAIM {
        return Err(format!("{what} is longer than {MAX_CLAIM} bytes"));
    }
    let bad = v.chars().any(|c| {
        matches!(
            c.general_category(),
            G::Control | G::Format | G::LineSeparator | G::ParagraphSeparator
        )
    });
    if bad {
        return Err(format!(
            "{what} holds control, format (bidi) or separator characters"
        ));
    }
    Ok(())
}

/// What tokens say about a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub display_name: String,
    pub roles: Vec<String>,
    /// App-defined claims of a user minted through `POST /admin/sessions`, signed under `ext`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<serde_json::Value>,
}

/// All known users; read-only apart from role overrides.
pub struct Directory {
    users: HashMap<String, User>,
    overrides: DashMap<String, Vec<String>>,
    /// Checked for unknown users so they take as long as wrong passwords.
    dummy_hash: String,
    gate: HashGate,
}

/// Too many password checks are running or queued: answer 503 and let the client retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Bounds argon2 work: about one hash per core runs at once (fewer if their memory would
/// pass [`HASH_MEMORY_BUDGET_KIB`]), a short queue waits, everyone else is turned away at
/// once. So a login flood costs a fixed amount of memory and CPU, and the async workers
/// (health checks, refreshes, channels) never wait behind it.
pub struct HashGate {
    /// Hashes running now; the permit travels into the blocking thread.
    running: Arc<Semaphore>,
    /// Hashes running or waiting for a slot.
    admitted: Arc<Semaphore>,
}

impl HashGate {
    /// Slots from the core count and the memory budget for hashes of `hash_kib` each (the
    /// largest `m` of the users file); `QUEUE_PER_SLOT` waiters per slot.
    pub fn new(hash_kib: u32) -> Self {
        // glibc serves a freed 19 MiB block's size from per-thread heap arenas afterwards
        // (its mmap threshold adapts upward) and keeps the pages: over a flood each blocking
        // thread's arena held its own copies, +270 MiB with two slots. Allocations of 1 MiB
        // and more always mmap, so each hash's memory goes back to the OS when it is done.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes an allocator tunable; it is safe at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let by_memory = (HASH_MEMORY_BUDGET_KIB / hash_kib.max(1)) as usize;
        Self::with_slots(cores.min(by_memory).max(1))
    }

    fn with_slots(slots: usize) -> Self {
        HashGate {
            running: Arc::new(Semaphore::new(slots)),
            admitted: Arc::new(Semaphore::new(slots * (1 + QUEUE_PER_SLOT))),
        }
    }

    /// Runs `check` on a blocking thread once a slot is free, or returns [`Busy`] at once
    /// when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
        // Both permits go with the work: a client that hangs up mid-hash frees its place
        // only when the hash it started is done.
        tokio::task::spawn_blocking(move || {
            let _places = (admitted, running);
            check()
        })
        .await
        .map_err(|_| Busy)
    }
}

/// The memory (KiB) checking a PHC string costs: its `m` parameter.
fn memory_kib(phc: &str) -> Option<u32> {
    PasswordHash::new(phc).ok()?.params.get_decimal("m")
}

/// Hashes a password as an argon2id PHC string.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default params")
        .to_string()
}

/// A hash to check unknown names against, with the parameters of the costliest hash in the
/// users file: an unknown name then takes as long as a wrong password of the slowest user.
fn dummy_hash(users: &[User]) -> String {
    let costliest = users
        .iter()
        .filter_map(|u| Params::try_from(&PasswordHash::new(&u.password_hash).ok()?).ok())
        // m is the memory of all lanes together and, without argon2's `parallel` feature,
        // lanes run one after another: the cost is m × t.
        .max_by_key(|p| u64::from(p.m_cost()) * u64::from(p.t_cost()));
    let Some(params) = costliest else {
        return hash_password("not a real password");
    };
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(b"not a real password", &salt)
        .map_or_else(|_| hash_password("not a real password"), |h| h.to_string())
}

fn verify_hash(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

impl Directory {
    /// Loads a users file (warning when others may read its hashes).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o044 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "users file is readable by group or other: its password hashes can be \
                     guessed offline; chmod 600 it"
                );
            }
        }
        let file: UsersFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for u in &file.user {
            if is_external(&u.name) {
                return Err(format!(
                    "{}: user {:?}: names starting with {MINTED:?} or {HOOKED:?} are kept for \
                     users minted by the app or its login hook",
                    path.display(),
                    u.name
                ));
            }
            PasswordHash::new(&u.password_hash).map_err(|e| {
                format!(
                    "{}: user {:?} has a bad password_hash: {e}",
                    path.display(),
                    u.name
                )
            })?;
        }
        Ok(Self::from_users(file.user))
    }

    /// Demo mode: `alice` (admin) and `bob` with random passwords, kept (hashed) in
    /// `demo-users.toml` in the data dir. The passwords are printed only when first created.
    pub fn demo(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join(DEMO_USERS_FILE);
        if path.exists() {
            println!("demo mode: users alice (admin) and bob from {} (passwords were printed when they were created; new ones: `cargo run --release -- demo-users --reset`, or `tokenpush demo-users --reset --data-dir {}`)", path.display(), data_dir.display());
            return Self::load(&path);
        }
        Self::create_demo(
            data_dir,
            &path,
            "WARNING: demo mode (no --users file). Demo users, shown this once:",
        )
    }

    /// Replaces the demo users with new random passwords and prints them. A running server
    /// keeps the old ones until it restarts.
    pub fn reset_demo(data_dir: &Path) -> Result<Self, String> {
        crate::tokens::keys::ensure_data_dir(data_dir).map_err(|e| e.to_string())?;
        let path = data_dir.join(DEMO_USERS_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        let d = Self::create_demo(data_dir, &path, "new demo users, shown this once:")?;
        println!("A running server uses the new passwords after a restart.");
        Ok(d)
    }

    fn create_demo(data_dir: &Path, path: &Path, title: &str) -> Result<Self, String> {
        let mut users = vec![];
        let mut shown = vec![];
        for (name, roles) in [("alice", vec!["admin".to_string()]), ("bob", vec![])] {
            let mut raw = [0u8; 9];
            rand::fill(&mut raw);
            let password =
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
            users.push(User {
                name: name.into(),
                password_hash: hash_password(&password),
                roles,
                display_name: None,
            });
            shown.push((name, password));
        }
        let text = toml::to_string(&UsersFile {
            user: users.clone(),
        })
        .map_err(|e| e.to_string())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        println!("{title}");
        for (name, password) in shown {
            println!("  {name:<6} password: {password}");
        }
        println!(
            "  (new passwords any time: `cargo run --release -- demo-users --reset`, or `tokenpush demo-users --reset --data-dir {}`)",
            data_dir.display()
        );
        Ok(Self::from_users(users))
    }

    fn from_users(list: Vec<User>) -> Self {
        let hash_kib = list
            .iter()
            .filter_map(|u| memory_kib(&u.password_hash))
            .fold(Params::DEFAULT_M_COST, u32::max);
        let dummy_hash = dummy_hash(&list);
        Directory {
            users: list.into_iter().map(|u| (u.name.clone(), u)).collect(),
            overrides: DashMap::new(),
            dummy_hash,
            gate: HashGate::new(hash_kib),
        }
    }

    /// Checks a password in about the same time whether or not the user exists, on a
    /// blocking thread behind the [`HashGate`]: [`Busy`] when too many checks are queued.
    pub async fn check_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<Identity>, Busy> {
        let (phc, known) = match self.users.get(name) {
            Some(u) => (u.password_hash.clone(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let password = password.to_string();
        let ok = self.gate.run(move || verify_hash(&password, &phc)).await?;
        Ok(if ok && known {
            self.identity(name)
        } else {
            None
        })
    }

    /// Name, display name and effective roles (an admin override beats the file).
    pub fn identity(&self, name: &str) -> Option<Identity> {
        let u = self.users.get(name)?;
        let roles = self
            .overrides
            .get(name)
            .map(|r| r.clone())
            .unwrap_or_else(|| u.roles.clone());
        Some(Identity {
            name: u.name.clone(),
            display_name: u.display_name.clone().unwrap_or_else(|| u.name.clone()),
            roles,
            ext: None,
        })
    }

    /// Whether `name` is a known user.
    pub fn exists(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// Names of every user, for loading overrides at start.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.users.keys()
    }

    /// Caches roles set by an admin (here or on another node).
    pub fn set_roles(&self, name: &str, roles: Vec<String>) {
        self.overrides.insert(name.to_string(), roles);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_file_round_trip_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.toml");
        let h = hash_password("pw");
        std::fs::write(&p, format!("[[user]]\nname = \"carol\"\npassword_hash = \"{h}\"\nroles = [\"admin\"]\ndisplay_name = \"Carol C\"\n")).unwrap();
        let d = Directory::load(&p).unwrap();
        let id = d.check_password("carol", "pw").await.unwrap().unwrap();
        assert_eq!(
            (id.display_name.as_str(), id.roles.as_slice()),
            ("Carol C", &["admin".to_string()][..])
        );
        assert!(d.check_password("carol", "nope").await.unwrap().is_none());
        assert!(d.check_password("nobody", "pw").await.unwrap().is_none());
        d.set_roles("carol", vec![]);
        assert!(d.identity("carol").unwrap().roles.is_empty());
    }

    #[test]
    fn hash_memory_is_read_from_the_phc_string() {
        assert_eq!(
            memory_kib(&hash_password("pw")),
            Some(Params::DEFAULT_M_COST)
        );
        let big = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI";
        assert_eq!(memory_kib(big), Some(65536));
        assert_eq!(memory_kib("not a hash"), None);
    }

    #[tokio::test]
    async fn gate_turns_away_what_it_cannot_queue() {
        let gate = Arc::new(HashGate::with_slots(1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        // One running (blocked until told), QUEUE_PER_SLOT waiting: the next is Busy.
        let mut held = vec![];
        for _ in 0..=QUEUE_PER_SLOT {
            let (g, rx) = (gate.clone(), rx.clone());
            held.push(tokio::spawn(async move {
                g.run(move || rx.lock().unwrap().recv().is_ok()).await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(gate.run(|| true).await, Err(Busy));
        for _ in 0..=QUEUE_PER_SLOT {
            tx.send(()).unwrap();
        }
        for h in held {
            assert_eq!(h.await.unwrap(), Ok(true));
        }
        assert_eq!(
            gate.run(|| 7).await,
            Ok(7),
            "places come back when the work is done"
        );
    }

    #[test]
    fn demo_users_are_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = Directory::demo(dir.path()).unwrap();
        assert_eq!(
            a.identity("alice").unwrap().roles,
            vec!["admin".to_string()]
        );
        assert!(Directory::demo(dir.path()).unwrap().exists("bob"));
        let before = std::fs::read_to_string(dir.path().join(DEMO_USERS_FILE)).unwrap();
        assert!(Directory::reset_demo(dir.path()).unwrap().exists("alice"));
        let after = std::fs::read_to_string(dir.path().join(DEMO_USERS_FILE)).unwrap();
        assert_ne!(before, after, "reset makes new password hashes");
    }

    #[test]
    fn outside_claims_with_forging_characters_are_refused() {
        assert!(check_claim("sub", "erin@app").is_ok());
        assert!(check_claim("name", "Zoë Ñ 李").is_ok());
        for bad in [
            "",
            " x",
            "x ",
            "a\nb",
            "a\rb",
            "a\u{202e}b",
            "a\u{200b}b",
            "a\u{2028}b",
        ] {
            assert!(check_claim("sub", bad).is_err(), "{bad:?}");
        }
        assert!(check_claim("sub", &"x".repeat(MAX_CLAIM)).is_ok());
        assert!(check_claim("sub", &"x".repeat(MAX_CLAIM + 1)).is_err());
    }

    #[test]
    fn users_file_names_cannot_take_an_external_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.toml");
        let h = hash_password("pw");
        std::fs::write(
            &p,
            format!("[[user]]\nname = \"ext:bob\"\npassword_hash = \"{h}\"\n"),
        )
        .unwrap();
        let err = Directory::load(&p).err().unwrap();
        assert!(err.contains("ext:bob"), "{err}");
    }
}
