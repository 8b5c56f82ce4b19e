//! The cluster secret: after the hello exchange, both sides prove they know it, so a component
//! or client without it can neither join nor be talked to.
//!
//! The secret comes from `LEGO_CLUSTER_SECRET`, else from what the process set with
//! [`Secret::set_fallback`] (the `lego` command's configuration file), else it is empty (a
//! cluster without a secret).
//! The exchange, with HMAC-SHA256 keyed by the secret:
//!
//! ```text
//! server -> client   server nonce (32 random bytes)
//! client -> server   client nonce (32) || HMAC("lego client" || server nonce || client nonce)
//! server -> client   verdict (1: accepted, 0: refused) || HMAC("lego server" || nonces)
//! ```
//!
//! Fresh nonces on both sides make every proof single-use; the server's proof keeps a client from
//! talking to an impostor that does not know the secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof.
pub const MAC_LEN: usize = 32;
/// Bytes the client sends: its nonce and its proof.
pub const CLIENT_LEN: usize = NONCE_LEN + MAC_LEN;
/// Bytes the server sends last: the verdict and its proof.
pub const VERDICT_LEN: usize = 1 + MAC_LEN;

/// The environment variable holding the cluster secret.
pub const SECRET_ENV: &str = "LEGO_CLUSTER_SECRET";

/// A cluster secret.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The secret of this process when `LEGO_CLUSTER_SECRET` is unset.
static FALLBACK: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();

impl Secret {
    /// The secret of this process: the one in `LEGO_CLUSTER_SECRET`, else the one given to
    /// [`Secret::set_fallback`], else the empty secret.
    pub fn current() -> Secret {
        match std::env::var_os(SECRET_ENV) {
            Some(v) => Secret(std::os::unix::ffi::OsStringExt::into_vec(v)),
            None => FALLBACK.get().cloned().unwrap_or_else(|| Secret(Vec::new())),
        }
    }

    /// Makes `secret` the secret of this process wherever `LEGO_CLUSTER_SECRET` is unset. Only
    /// the first call counts.
    pub fn set_fallback(secret: Secret) {
        // A later call is ignored, as documented: the secret of a process does not change.
        let _ = FALLBACK.set(secret);
    }

    /// A secret of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    fn mac(&self, label: &[u8], server: &[u8; NONCE_LEN], client: &[u8; NONCE_LEN]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(label);
        m.update(server);
        m.update(client);
        m
    }

    /// The client's message for the server's `nonce`: a fresh nonce and the client's proof.
    pub fn client_message(&self, server: &[u8; NONCE_LEN]) -> [u8; CLIENT_LEN] {
        let client = nonce();
        let mut out = [0u8; CLIENT_LEN];
        out[..NONCE_LEN].copy_from_slice(&client);
        out[NONCE_LEN..].copy_from_slice(&self.mac(b"lego client", server, &client).finalize().into_bytes());
        out
    }

    /// The server's check of a client message, and its verdict message.
    pub fn verdict(&self, server: &[u8; NONCE_LEN], msg: &[u8; CLIENT_LEN]) -> (bool, [u8; VERDICT_LEN]) {
        let client: [u8; NONCE_LEN] = msg[..NONCE_LEN].try_into().expect("nonce");
        let ok = self.mac(b"lego client", server, &client).verify_slice(&msg[NONCE_LEN..]).is_ok();
        let mut out = [0u8; VERDICT_LEN];
        out[0] = u8::from(ok);
        if ok {
            out[1..].copy_from_slice(&self.mac(b"lego server", server, &client).finalize().into_bytes());
        }
        (ok, out)
    }

    /// The client's check of the server's verdict: `Ok` if accepted by a server that knows the
    /// secret; the error says which side failed.
    pub fn check_verdict(&self, server: &[u8; NONCE_LEN], sent: &[u8; CLIENT_LEN], verdict: &[u8; VERDICT_LEN]) -> Result<(), AuthError> {
        if verdict[0] != 1 {
            return Err(AuthError::Refused);
        }
        let client: [u8; NONCE_LEN] = sent[..NONCE_LEN].try_into().expect("nonce");
        self.mac(b"lego server", server, &client).verify_slice(&verdict[1..]).map_err(|_| AuthError::Impostor)
    }
}

/// Why the secret exchange failed, as the client sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The server did not accept this side's proof.
    Refused,
    /// The server's own proof is wrong: it does not know the secret.
    Impostor,
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).expect("the system random source");
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_secret_passes_both_ways() {
        let s = Secret::new("hunter2");
        let sn = nonce();
        let msg = s.client_message(&sn);
        let (ok, verdict) = s.verdict(&sn, &msg);
        assert!(ok);
        assert_eq!(s.check_verdict(&sn, &msg, &verdict), Ok(()));
    }

    #[test]
    fn the_fallback_counts_where_the_environment_says_nothing() {
        Secret::set_fallback(Secret::new("from a file"));
        Secret::set_fallback(Secret::new("a second call is ignored"));
        let want = std::env::var_os(SECRET_ENV).map_or(b"from a file".to_vec(), |v| v.into_encoded_bytes());
        assert_eq!(Secret::current().0, want);
    }

    #[test]
    fn a_wrong_or_missing_secret_is_refused_and_an_impostor_is_caught() {
        let (server, client) = (Secret::new("right"), Secret::new(""));
        let sn = nonce();
        let msg = client.client_message(&sn);
        let (ok, verdict) = server.verdict(&sn, &msg);
        assert!(!ok);
        assert_eq!(client.check_verdict(&sn, &msg, &verdict), Err(AuthError::Refused));
        // A server that claims acceptance without knowing the secret.
        let mut forged = [0u8; VERDICT_LEN];
        forged[0] = 1;
        assert_eq!(server.check_verdict(&sn, &server.client_message(&sn), &forged), Err(AuthError::Impostor));
        // A proof is bound to the server's nonce: replaying it against another nonce fails.
        let msg = server.client_message(&sn);
        assert!(!server.verdict(&nonce(), &msg).0);
    }
}
