//! argon2id password hashes in PHC strings: the parameters `a-chat passwd` uses, making a
//! hash, checking a password against one, and the random bytes salts are made from.
//!
//! Pure and blocking: a check costs tens of milliseconds of one core, so callers run it on
//! the bounded pool of [`crate::auth::Auth`], never on a connection thread.

use std::io;

use argon2::password_hash::{self, PasswordHashString, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

/// Memory per check, KiB: OWASP's minimum for argon2id (2025) with [`PASSES`] passes.
pub const MEMORY_KIB: u32 = 19_456;
/// Passes over the memory.
pub const PASSES: u32 = 2;
/// Lanes (parallelism): one, so one check keeps one core busy and the pool's bound holds.
pub const LANES: u32 = 1;
/// Bytes of random salt per hash (the PHC recommendation).
const SALT_BYTES: usize = 16;

/// The parameters new hashes get. They are written into each PHC string, so raising them
/// later leaves existing hashes valid.
pub fn default_params() -> Params {
    Params::new(MEMORY_KIB, PASSES, LANES, None).expect("the built-in argon2 parameters are valid")
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    /// The kernel gave no random bytes for the salt.
    #[error("cannot read random bytes for the salt: {0}")]
    Random(io::Error),
    /// The random bytes could not be encoded as a salt.
    #[error("salt: {0}")]
    Salt(password_hash::Error),
    /// argon2 refused to hash (the parameters do not fit this machine's memory, say).
    #[error("cannot hash the password: {0}")]
    Hash(password_hash::Error),
}

/// Why a users file's value is not a hash a-chat can check passwords against.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not a PHC string at all.
    #[error("{0}")]
    Phc(password_hash::Error),
    /// A PHC string of another algorithm (argon2i, bcrypt...).
    #[error("the algorithm is {0}, not argon2id")]
    Algorithm(String),
    /// A PHC string without its salt or its hash.
    #[error("the salt or the hash is missing")]
    Incomplete,
    /// Parameters argon2 cannot use (out of range, unknown).
    #[error("bad parameters: {0}")]
    Params(password_hash::Error),
}

/// Hashes `password` with a fresh random salt into a PHC string (`$argon2id$v=19$...`).
pub fn make(password: &[u8], params: Params) -> Result<PasswordHashString, MakeError> {
    let salt = random_bytes::<SALT_BYTES>().map_err(MakeError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(MakeError::Salt)?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password, &salt)
        .map(|hash| hash.serialize())
        .map_err(MakeError::Hash)
}

/// True if `password` matches `hash`, computed with the parameters, salt and version the
/// hash names (the comparison itself takes constant time).
pub fn verify(hash: &PasswordHashString, password: &[u8]) -> bool {
    Argon2::default()
        .verify_password(password, &hash.password_hash())
        .is_ok()
}

/// Checks that `text` is an argon2id PHC string a-chat can verify against, and parses it.
pub fn parse(text: &str) -> Result<PasswordHashString, ParseError> {
    let hash = PasswordHash::new(text).map_err(ParseError::Phc)?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(ParseError::Algorithm(hash.algorithm.to_string()));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(ParseError::Incomplete);
    }
    Params::try_from(&hash).map_err(ParseError::Params)?;
    Ok(hash.serialize())
}

/// The parameters a hash was made with (the hash's length included), for a dummy that
/// costs the same to check.
pub fn params_of(hash: &PasswordHashString) -> Params {
    Params::try_from(&hash.password_hash()).unwrap_or_else(|_| default_params())
}

/// Allocations from this size up get their own mapping, returned to the system when
/// freed: a check's memory (19 MiB at the default settings) is one such allocation.
const OWN_MAPPING_BYTES: libc::c_int = 4 << 20;

/// Makes the memory of each check go back to the system when the check ends. glibc
/// otherwise raises its mapping threshold after the first free of a large block, and
/// then keeps a check's memory in the arena of every blocking thread that ever ran one
/// (measured: +131 MiB of resident memory after a flood of wrong logins, against one
/// check's worth with this).
pub fn return_memory_after_checks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; any value is valid for this parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_BYTES);
    }
}

/// `N` bytes from the kernel's random number generator.
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled part of our own buffer.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(buf)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Parameters cheap enough for unit tests (never for real hashes).
    pub fn cheap() -> Params {
        Params::new(64, 1, 1, None).unwrap()
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = make(b"correct horse", cheap()).unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{hash}"
        );
        assert!(verify(&hash, b"correct horse"));
        assert!(!verify(&hash, b"correct horse "));
        assert!(!verify(&hash, b""));
        let again = make(b"correct horse", cheap()).unwrap();
        assert_ne!(hash, again, "each hash has its own salt");
    }

    #[test]
    fn the_default_parameters_meet_the_owasp_minimum() {
        let p = default_params();
        assert!(p.m_cost() >= 19_456 && p.t_cost() >= 2 && p.p_cost() >= 1);
    }

    #[test]
    fn only_argon2id_phc_strings_parse() {
        let hash = make(b"pw", cheap()).unwrap();
        assert_eq!(parse(hash.as_str()).unwrap(), hash);
        assert_eq!(params_of(&hash).m_cost(), 64);
        let argon2i = hash.as_str().replacen("$argon2id$", "$argon2i$", 1);
        assert!(parse(&argon2i)
            .unwrap_err()
            .to_string()
            .contains("not argon2id"));
        assert!(parse("hunter2").is_err());
        assert!(parse("$argon2id$v=19$m=64,t=1,p=1").is_err());
    }
}
