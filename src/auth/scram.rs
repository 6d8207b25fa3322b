//! Server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it
//! (<https://www.postgresql.org/docs/current/sasl-authentication.html>).
//!
//! Verifiers have PostgreSQL's format
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, so a value
//! copied from `pg_authid.rolpassword` works as it is, and no plaintext is
//! needed to check a client.

use super::{ct_eq, AuthError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const MECHANISM: &str = "SCRAM-SHA-256";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl Verifier {
    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<Verifier, String> {
        let bad = || {
            "not a valid SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)".to_string()
        };
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (iter_salt, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iter, salt) = iter_salt.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iter.parse().map_err(|_| bad())?;
        if iterations == 0 {
            return Err(bad());
        }
        let salt = B64.decode(salt).map_err(|_| bad())?;
        let key = |s: &str| -> Result<[u8; 32], String> {
            B64.decode(s)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
                .ok_or_else(bad)
        };
        Ok(Verifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Builds a verifier from a plaintext password (random salt, 4096 rounds,
    /// as PostgreSQL does).
    pub fn from_password(password: &str) -> Verifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // The format is produced by the same code that parses it; a failure
        // here would be a bug in one of them, so fall back to a verifier
        // that no password matches rather than panic.
        Verifier::parse(&text).unwrap_or_else(|_| Verifier::unmatchable(b"invalid"))
    }

    /// A verifier no password can match, stable for a given seed: used for
    /// unknown users so the exchange looks the same as for real ones.
    pub fn unmatchable(seed: &[u8]) -> Verifier {
        let digest = Sha256::new()
            .chain_update(b"pgrouter-mock-salt")
            .chain_update(seed)
            .finalize();
        Verifier {
            iterations: 4096,
            salt: digest[..16].to_vec(),
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut m = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

enum State {
    AwaitingFirst,
    AwaitingFinal {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// One SCRAM exchange with one client.
pub struct ScramServer {
    verifier: Verifier,
    /// True for an unknown user: the exchange runs, then always fails.
    doomed: bool,
    state: State,
}

impl ScramServer {
    pub fn new(verifier: Verifier, doomed: bool) -> Self {
        Self {
            verifier,
            doomed,
            state: State::AwaitingFirst,
        }
    }

    /// Takes the client-first-message, returns the server-first-message.
    pub fn client_first(&mut self, data: &[u8]) -> Result<String, AuthError> {
        let text = std::str::from_utf8(data)
            .map_err(|_| malformed("client-first-message is not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or_else(|| malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(malformed(
                    "client requires channel binding, but it was not offered (no TLS)",
                ))
            }
            _ => return Err(malformed("invalid channel-binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| malformed("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(malformed("authorization identities are not supported"));
        }
        // client-first-bare: n=<user>,r=<nonce>[,extensions]; PostgreSQL ignores n=.
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or_else(|| malformed("missing or invalid client nonce"))?;
        let server_nonce = B64.encode(rand::random::<[u8; 18]>());
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        self.state = State::AwaitingFinal {
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Takes the client-final-message, returns the server-final-message
    /// (`v=<signature>`) when the proof is right.
    pub fn client_final(&mut self, data: &[u8]) -> Result<String, AuthError> {
        let State::AwaitingFinal {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(malformed("unexpected SCRAM message"));
        };
        let text = std::str::from_utf8(data)
            .map_err(|_| malformed("client-final-message is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| malformed("missing channel binding"))?;
        if binding != B64.encode(gs2_header.as_bytes()) {
            return Err(malformed("channel binding does not match the GS2 header"));
        }
        let got_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| malformed("missing nonce"))?;
        if got_nonce != nonce {
            return Err(malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .ok()
            .and_then(|p| <[u8; 32]>::try_from(p.as_slice()).ok())
            .ok_or_else(|| malformed("invalid proof"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature))
        {
            *k = p ^ s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if !ct_eq(&stored, &self.verifier.stored_key) || self.doomed {
            return Err(AuthError::Failed);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

fn malformed(what: &str) -> AuthError {
    AuthError::Malformed(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs postgres-protocol's client against our server.
    fn exchange(server_verifier: Verifier, doomed: bool, password: &str) -> Result<(), AuthError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut server = ScramServer::new(server_verifier, doomed);
        let first = server.client_first(client.message())?;
        client
            .update(first.as_bytes())
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        let fin = server.client_final(client.message())?;
        client
            .finish(fin.as_bytes())
            .map_err(|e| AuthError::Malformed(e.to_string()))
    }

    #[test]
    fn right_password_passes_and_server_is_verified() {
        let v = Verifier::from_password("s3cret");
        assert_eq!(exchange(v, false, "s3cret"), Ok(()));
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_alike() {
        let v = Verifier::from_password("s3cret");
        assert_eq!(exchange(v, false, "nope"), Err(AuthError::Failed));
        assert_eq!(
            exchange(Verifier::unmatchable(b"ghost"), true, "anything"),
            Err(AuthError::Failed)
        );
    }

    #[test]
    fn parses_postgres_verifier() {
        let text = postgres_protocol::password::scram_sha_256(b"pw");
        let v = Verifier::parse(&text);
        assert!(v.is_ok(), "{text}");
        assert!(Verifier::parse("SCRAM-SHA-256$x:abc$def:ghi").is_err());
        assert!(Verifier::parse("md5abc").is_err());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut s = ScramServer::new(Verifier::from_password("x"), false);
        assert!(matches!(
            s.client_first(b"\xff"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            s.client_first(b"n,,n=,"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            s.client_first(b"p=tls-server-end-point,,n=,r=abc"),
            Err(AuthError::Malformed(_))
        ));
        let mut s = ScramServer::new(Verifier::from_password("x"), false);
        assert!(s.client_first(b"n,,n=,r=abc").is_ok());
        assert!(matches!(
            s.client_final(b"c=biws,r=abc,p=AAAA"),
            Err(AuthError::Malformed(_))
        ));
    }
}
