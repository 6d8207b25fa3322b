//! md5 password authentication: the client sends
//! `"md5" + hex(md5(hex(md5(password + user)) + salt))`.

use md5::{Digest, Md5};

fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Is `secret` a stored md5 hash ("md5" + 32 hex digits) rather than plaintext?
pub fn is_stored_hash(secret: &str) -> bool {
    secret.len() == 35
        && secret.starts_with("md5")
        && secret[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The stored form: `"md5" + hex(md5(password + user))`.
pub fn stored_hash(user: &str, password: &str) -> String {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    format!("md5{}", hex(&h.finalize()))
}

/// What a client must answer for `salt`, given the configured secret
/// (plaintext or an "md5..." stored hash).
pub fn expected_response(user: &str, secret: &str, salt: [u8; 4]) -> String {
    let stored = if is_stored_hash(secret) {
        secret.to_string()
    } else {
        stored_hash(user, secret)
    };
    let mut h = Md5::new();
    h.update(&stored.as_bytes()[3..]);
    h.update(salt);
    format!("md5{}", hex(&h.finalize()))
}

/// Checks a client's md5 response in constant time.
pub fn verify(user: &str, secret: &str, salt: [u8; 4], response: &str) -> bool {
    super::ct_eq(
        expected_response(user, secret, salt).as_bytes(),
        response.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_libpq_algorithm() {
        // postgres-protocol implements the client side; both must agree.
        let salt = [1, 2, 3, 4];
        let client = postgres_protocol::authentication::md5_hash(b"app", b"secret", salt);
        assert!(verify("app", "secret", salt, &client));
        assert!(verify("app", &stored_hash("app", "secret"), salt, &client));
        assert!(!verify("app", "other", salt, &client));
        assert!(!verify("bob", "secret", salt, &client));
    }
}
