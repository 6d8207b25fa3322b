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
/// With channel binding; offered to TLS clients only.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The one channel-binding type PostgreSQL (and the router) supports.
pub const CHANNEL_BINDING: &str = "tls-server-end-point";

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

pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
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
        /// What `c=` must carry: the GS2 header, plus the channel-binding
        /// data when the client bound the channel.
        binding: Vec<u8>,
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
    /// `tls-server-end-point` data when the client is on TLS (then
    /// SCRAM-SHA-256-PLUS is offered).
    end_point: Option<std::sync::Arc<[u8]>>,
    state: State,
    /// The client's keys, once its proof checked out (SCRAM pass-through).
    keys: Option<super::passthrough::ScramKeys>,
}

impl ScramServer {
    pub fn new(verifier: Verifier, doomed: bool, end_point: Option<std::sync::Arc<[u8]>>) -> Self {
        Self {
            verifier,
            doomed,
            end_point,
            state: State::AwaitingFirst,
            keys: None,
        }
    }

    /// The mechanisms to offer, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.end_point.is_some() {
            &[MECHANISM_PLUS, MECHANISM]
        } else {
            &[MECHANISM]
        }
    }

    /// Takes the mechanism the client chose and its client-first-message,
    /// returns the server-first-message.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<String, AuthError> {
        if !self.mechanisms().contains(&mechanism) {
            return Err(malformed(
                "client selected an invalid SASL authentication mechanism",
            ));
        }
        let plus = mechanism == MECHANISM_PLUS;
        let text = std::str::from_utf8(data)
            .map_err(|_| malformed("client-first-message is not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or_else(|| malformed("no GS2 header"))?;
        // As PostgreSQL: the flag must agree with the mechanism, and a
        // client that thinks we cannot bind ('y') while we offered to was
        // downgraded by someone in between.
        let cbind_data: &[u8] = match (flag, plus, &self.end_point) {
            ("n", false, _) => &[],
            ("y", false, None) => &[],
            ("y", _, Some(_)) => {
                return Err(malformed(
                    "SCRAM channel binding negotiation error: the client supports channel binding but thinks the server does not, though it does",
                ))
            }
            (f, true, Some(data)) if f.strip_prefix("p=") == Some(CHANNEL_BINDING) => data,
            (f, true, Some(_)) if f.starts_with("p=") => {
                return Err(malformed("unsupported SCRAM channel-binding type"))
            }
            (f, false, _) if f.starts_with("p=") => {
                return Err(malformed(
                    "the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data",
                ))
            }
            ("n" | "y", true, _) => {
                return Err(malformed(
                    "the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data",
                ))
            }
            _ => return Err(malformed("invalid channel-binding flag")),
        };
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
        let mut binding = format!("{flag},{authzid},").into_bytes();
        binding.extend_from_slice(cbind_data);
        self.state = State::AwaitingFinal {
            binding,
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
            binding: expected_binding,
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
        if !ct_eq(binding.as_bytes(), B64.encode(&expected_binding).as_bytes()) {
            return Err(malformed("SCRAM channel binding check failed"));
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
        self.keys = Some(super::passthrough::ScramKeys {
            client_key,
            server_key: self.verifier.server_key,
            salt: self.verifier.salt.clone(),
            iterations: self.verifier.iterations,
        });
        Ok(format!("v={}", B64.encode(server_signature)))
    }

    /// After a successful exchange: the client's keys, which can log into a
    /// server holding the same verifier.
    pub fn keys(&self) -> Option<super::passthrough::ScramKeys> {
        self.keys.clone()
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
        bound_exchange(
            server_verifier,
            doomed,
            password,
            None,
            ChannelBinding::unsupported(),
        )
    }

    /// The same with channel binding: `end_point` is the server's data,
    /// `client` what the client binds to.
    fn bound_exchange(
        server_verifier: Verifier,
        doomed: bool,
        password: &str,
        end_point: Option<&[u8]>,
        binding: ChannelBinding,
    ) -> Result<(), AuthError> {
        let mut client = ScramSha256::new(password.as_bytes(), binding);
        let mut server = ScramServer::new(server_verifier, doomed, end_point.map(Into::into));
        let message = client.message().to_vec();
        let mechanism = if message.starts_with(b"p=") {
            MECHANISM_PLUS
        } else {
            MECHANISM
        };
        let first = server.client_first(mechanism, &message)?;
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
    fn channel_binding_checks_the_certificate_hash() {
        let v = || Verifier::from_password("pw");
        let ours: &[u8] = b"hash of our certificate";
        let bind = |data: &[u8]| ChannelBinding::tls_server_end_point(data.to_vec());
        assert_eq!(
            bound_exchange(v(), false, "pw", Some(ours), bind(ours)),
            Ok(())
        );
        // A man in the middle terminates TLS with another certificate.
        assert!(matches!(
            bound_exchange(v(), false, "pw", Some(ours), bind(b"their certificate")),
            Err(AuthError::Malformed(_))
        ));
        // Binding demanded where it was not offered (no TLS).
        assert!(matches!(
            bound_exchange(v(), false, "pw", None, bind(ours)),
            Err(AuthError::Malformed(_))
        ));
        // 'y' (client thinks we cannot bind) though we offered: downgrade.
        assert!(matches!(
            bound_exchange(v(), false, "pw", Some(ours), ChannelBinding::unrequested()),
            Err(AuthError::Malformed(_))
        ));
        // 'n' (the client chose not to bind) is its right.
        assert_eq!(
            bound_exchange(v(), false, "pw", Some(ours), ChannelBinding::unsupported()),
            Ok(())
        );
        // The PLUS mechanism without binding data is refused.
        let mut s = ScramServer::new(v(), false, Some(ours.into()));
        assert!(s.client_first(MECHANISM_PLUS, b"n,,n=,r=abc").is_err());
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
        let mut s = ScramServer::new(Verifier::from_password("x"), false, None);
        assert!(matches!(
            s.client_first(MECHANISM, b"\xff"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            s.client_first(MECHANISM, b"n,,n=,"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            s.client_first(MECHANISM, b"p=tls-server-end-point,,n=,r=abc"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            s.client_first(MECHANISM_PLUS, b"p=tls-server-end-point,,n=,r=abc"),
            Err(AuthError::Malformed(_))
        ));
        let mut s = ScramServer::new(Verifier::from_password("x"), false, None);
        assert!(s.client_first(MECHANISM, b"n,,n=,r=abc").is_ok());
        assert!(matches!(
            s.client_final(b"c=biws,r=abc,p=AAAA"),
            Err(AuthError::Malformed(_))
        ));
    }
}
