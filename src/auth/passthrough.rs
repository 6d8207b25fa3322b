//! SCRAM pass-through: logging into a server as a user without knowing
//! its password.
//!
//! A client's SCRAM proof against a verifier reveals the ClientKey (proof
//! XOR ClientSignature); with it and the verifier's ServerKey the router
//! can run the client side of SCRAM against a server that holds the same
//! verifier (same salt and iterations: a verifier copied from
//! `pg_authid.rolpassword`, or read by `[auth] query`). The keys stay in
//! memory; nothing is written anywhere. This is what PgBouncer does with
//! auth_query users.

use super::scram::hmac;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

/// The keys a successful client login yields.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
    /// The verifier's salt and iterations: a server with other ones holds
    /// another verifier, and the keys cannot log into it.
    pub salt: Vec<u8>,
    pub iterations: u32,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(<secret>)")
    }
}

/// The latest keys learned for one user, shared by that user's pools
/// (read at each server login, replaced by each client login).
#[derive(Debug, Default)]
pub struct KeySlot(arc_swap::ArcSwapOption<ScramKeys>);

impl KeySlot {
    pub fn store(&self, keys: ScramKeys) {
        self.0.store(Some(std::sync::Arc::new(keys)));
    }

    pub fn load(&self) -> Option<std::sync::Arc<ScramKeys>> {
        self.0.load_full()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PassThroughError {
    #[error("malformed SCRAM server-first-message")]
    Malformed,
    #[error("the server's nonce does not extend ours")]
    Nonce,
    #[error(
        "the server holds another SCRAM verifier for this user (salt or iteration count differ from the one pgrouter checked the client against): copy the verifier from pg_authid, or set server_password"
    )]
    OtherVerifier,
    #[error("the server's SCRAM signature is wrong")]
    ServerSignature,
}

/// The client side of one SCRAM exchange, proving with keys instead of a
/// password (no PBKDF2 either: the login is cheaper than with a password).
pub struct KeyClient {
    keys: std::sync::Arc<ScramKeys>,
    client_first_bare: String,
    nonce: String,
    expected_server_signature: Option<[u8; 32]>,
}

impl KeyClient {
    pub fn new(keys: std::sync::Arc<ScramKeys>) -> Self {
        let nonce = B64.encode(rand::random::<[u8; 18]>());
        Self {
            keys,
            client_first_bare: format!("n=,r={nonce}"),
            nonce,
            expected_server_signature: None,
        }
    }

    /// The client-first-message (no channel binding: "n,,").
    pub fn first_message(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Takes the server-first-message, returns the client-final-message.
    pub fn final_message(&mut self, server_first: &[u8]) -> Result<String, PassThroughError> {
        let text = std::str::from_utf8(server_first).map_err(|_| PassThroughError::Malformed)?;
        let attr = |k: &str| {
            text.split(',')
                .find_map(|a| a.strip_prefix(k))
                .ok_or(PassThroughError::Malformed)
        };
        let nonce = attr("r=")?;
        let salt = B64
            .decode(attr("s=")?)
            .map_err(|_| PassThroughError::Malformed)?;
        let iterations: u32 = attr("i=")?
            .parse()
            .map_err(|_| PassThroughError::Malformed)?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(PassThroughError::Nonce);
        }
        if salt != self.keys.salt || iterations != self.keys.iterations {
            return Err(PassThroughError::OtherVerifier);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let stored_key: [u8; 32] = Sha256::digest(self.keys.client_key).into();
        let signature = hmac(&stored_key, &[auth_message.as_bytes()]);
        let mut proof = self.keys.client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.expected_server_signature =
            Some(hmac(&self.keys.server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final-message (`v=<signature>`).
    pub fn verify(&self, server_final: &[u8]) -> Result<(), PassThroughError> {
        let text = std::str::from_utf8(server_final).map_err(|_| PassThroughError::Malformed)?;
        let got = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(PassThroughError::Malformed)?;
        match self.expected_server_signature {
            Some(want) if super::ct_eq(&got, &want) => Ok(()),
            _ => Err(PassThroughError::ServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{ScramServer, Verifier, MECHANISM};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// A client logs in with its password; the keys that yields log into
    /// a second server holding the same verifier.
    #[test]
    fn keys_from_one_login_open_another() {
        let verifier = Verifier::from_password("pw");
        // The client's login to the router.
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let mut router = ScramServer::new(verifier.clone(), false, None);
        let first = router
            .client_first(MECHANISM, client.message())
            .unwrap_or_else(|e| panic!("{e}"));
        client
            .update(first.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let fin = router
            .client_final(client.message())
            .unwrap_or_else(|e| panic!("{e}"));
        client
            .finish(fin.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let keys = router
            .keys()
            .unwrap_or_else(|| panic!("no keys after a login"));

        // The router's login to a server with the same verifier.
        let mut server = ScramServer::new(verifier.clone(), false, None);
        let mut ours = KeyClient::new(std::sync::Arc::new(keys.clone()));
        let server_first = server
            .client_first(MECHANISM, ours.first_message().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let client_final = ours
            .final_message(server_first.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let server_final = server
            .client_final(client_final.as_bytes())
            .unwrap_or_else(|e| panic!("server refused the keys: {e}"));
        assert_eq!(ours.verify(server_final.as_bytes()), Ok(()));
        // A forged server signature is caught.
        assert_eq!(
            ours.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(PassThroughError::ServerSignature)
        );

        // A server with another verifier (other salt) is recognised as such.
        let other = Verifier::from_password("pw");
        let mut server = ScramServer::new(other, false, None);
        let mut ours = KeyClient::new(std::sync::Arc::new(keys));
        let server_first = server
            .client_first(MECHANISM, ours.first_message().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ours.final_message(server_first.as_bytes()),
            Err(PassThroughError::OtherVerifier)
        );
    }
}
