//! Authentication of a TCP connection between remjit and `remjit-executor listen=`: both sides
//! prove they know a shared token (at least 256 random bits) without sending it, before the
//! executor sends anything else (no Setup, no symbols).
//!
//! The handshake, in fixed-size messages (so every read is bounded; callers put a timeout on
//! the socket):
//!
//! ```text
//! executor -> controller  hello   MAGIC (16) | executor nonce EN (32)                 48 bytes
//! controller -> executor  answer  MAGIC (16) | controller nonce CN (32) | CMAC (32)  80 bytes
//! executor -> controller  verdict status (1: accepted, 0: refused) | EMAC (32)       33 bytes
//!
//! CMAC = HMAC-SHA-256(token, "remjit-auth-v1 controller" | EN | CN)
//! EMAC = HMAC-SHA-256(token, "remjit-auth-v1 executor"   | EN | CN)   (zeroes when refused)
//! ```
//!
//! Both nonces are fresh (getrandom(2)), so neither MAC can be replayed; the two labels differ,
//! so one side's MAC is no answer for the other. The controller checks EMAC too: a peer that
//! does not know the token gets no code from it. MAGIC's first eight bytes read as a frame
//! header's size field give 7, below the 32-byte header: a plain SimpleRemoteEPC controller
//! (LLVM's) rejects it at once instead of waiting for a huge payload. Bytes 8..16 name the
//! protocol and its version. After an accepted verdict the SimpleRemoteEPC session starts
//! (the executor's Setup frame).

use std::io::{Read, Write};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The first 16 bytes of the executor's hello and the controller's answer.
pub const MAGIC: [u8; 16] = *b"\x07\0\0\0\0\0\0\0RJAUTH\0\x01";
/// Size of a nonce, and of a MAC.
const N: usize = 32;
const CONTROLLER_LABEL: &[u8] = b"remjit-auth-v1 controller";
const EXECUTOR_LABEL: &[u8] = b"remjit-auth-v1 executor";
/// The environment variable both sides read the token from.
pub const TOKEN_ENV: &str = "REMJIT_TOKEN";

/// What can go wrong authenticating.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The stream failed or timed out.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer does not speak this handshake.
    #[error("the peer does not speak remjit's authentication handshake")]
    NotAuth,
    /// Executor side: the controller's proof is wrong.
    #[error("the controller did not prove it knows the token (wrong token)")]
    WrongToken,
    /// Controller side: the executor said no.
    #[error(
        "the executor refused the token (both sides must use the same REMJIT_TOKEN or token file)"
    )]
    Refused,
    /// Controller side: the executor's proof is wrong.
    #[error("the executor did not prove it knows the token")]
    BadExecutorProof,
    /// No randomness.
    #[error("cannot get random bytes: {0}")]
    Random(std::io::Error),
}

/// The shared secret.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Parses a token: hexadecimal digits (surrounding whitespace ignored), at least 64 of
    /// them (256 bits), e.g. from `openssl rand -hex 32`.
    pub fn parse(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.len() < 64 || !t.len().is_multiple_of(2) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                "a token must be at least 64 hexadecimal digits (256 bits), e.g. from \
                        `openssl rand -hex 32`"
                    .into(),
            );
        }
        let bytes = (0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).map_err(|e| e.to_string()))
            .collect::<Result<Vec<u8>, String>>()?;
        Ok(Token(bytes))
    }

    /// Reads a token file, which must be private to its owner (mode 0600 or stricter).
    pub fn from_file(path: &Path) -> Result<Token, String> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let file = std::fs::File::open(path).map_err(|e| format!("token file {shown}: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("token file {shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("token file {shown}: not a regular file"));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "token file {shown} is readable by others (mode {mode:04o}): `chmod 600 {shown}`"
            ));
        }
        let mut text = String::new();
        file.take(4096)
            .read_to_string(&mut text)
            .map_err(|e| format!("token file {shown}: {e}"))?;
        Token::parse(&text).map_err(|e| format!("token file {shown}: {e}"))
    }

    /// The token from `file` if given, else from `$REMJIT_TOKEN`, else none.
    pub fn load(file: Option<&Path>) -> Result<Option<Token>, String> {
        if let Some(f) = file {
            return Token::from_file(f).map(Some);
        }
        match std::env::var(TOKEN_ENV) {
            Ok(v) => Token::parse(&v)
                .map(Some)
                .map_err(|e| format!("{TOKEN_ENV}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(format!("{TOKEN_ENV}: {e}")),
        }
    }

    fn mac(&self, label: &[u8], en: &[u8; N], cn: &[u8; N]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        m.update(label);
        m.update(en);
        m.update(cn);
        m
    }
}

/// Fresh random bytes from getrandom(2).
pub fn random_bytes<const L: usize>() -> Result<[u8; L], AuthError> {
    let mut out = [0u8; L];
    let mut got = 0;
    while got < L {
        // SAFETY: getrandom writes at most `L - got` bytes into our buffer.
        let n = unsafe { libc::getrandom(out[got..].as_mut_ptr().cast(), L - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(AuthError::Random(e));
            }
        } else {
            got += n as usize;
        }
    }
    Ok(out)
}

fn read_array<const L: usize>(s: &mut dyn Read) -> Result<[u8; L], AuthError> {
    let mut b = [0u8; L];
    s.read_exact(&mut b)?;
    Ok(b)
}

/// Whether the first eight bytes of a stream are the start of an executor's hello (for a
/// controller without a token, to say what is missing).
pub fn is_hello_start(first: &[u8; 8]) -> bool {
    first[..] == MAGIC[..8]
}

/// Executor side: challenges the controller; `Ok` when it proved it knows `token` (the
/// controller has then been told, with the executor's own proof).
pub fn executor_handshake<S: Read + Write>(s: &mut S, token: &Token) -> Result<(), AuthError> {
    let en: [u8; N] = random_bytes()?;
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&en);
    s.write_all(&hello)?;
    s.flush()?;
    let answer: [u8; 16 + 2 * N] = read_array(s)?;
    if answer[..16] != MAGIC {
        return Err(AuthError::NotAuth);
    }
    let mut cn = [0u8; N];
    cn.copy_from_slice(&answer[16..16 + N]);
    let ok = token
        .mac(CONTROLLER_LABEL, &en, &cn)
        .verify_slice(&answer[16 + N..])
        .is_ok();
    let mut verdict = vec![0u8; 1 + N];
    if ok {
        verdict[0] = 1;
        let emac = token.mac(EXECUTOR_LABEL, &en, &cn).finalize().into_bytes();
        verdict[1..].copy_from_slice(&emac);
    }
    s.write_all(&verdict)?;
    s.flush()?;
    if ok {
        Ok(())
    } else {
        Err(AuthError::WrongToken)
    }
}

/// Controller side: answers the executor's challenge and checks its proof. `first` holds the
/// hello's first eight bytes when the caller has already read them.
pub fn controller_handshake<S: Read + Write>(
    s: &mut S,
    token: &Token,
    first: Option<[u8; 8]>,
) -> Result<(), AuthError> {
    let start = match first {
        Some(f) => f,
        None => read_array(s)?,
    };
    let rest: [u8; 8 + N] = read_array(s)?;
    if !is_hello_start(&start) || rest[..8] != MAGIC[8..] {
        return Err(AuthError::NotAuth);
    }
    let mut en = [0u8; N];
    en.copy_from_slice(&rest[8..]);
    let cn: [u8; N] = random_bytes()?;
    let mut answer = MAGIC.to_vec();
    answer.extend_from_slice(&cn);
    answer.extend_from_slice(
        &token
            .mac(CONTROLLER_LABEL, &en, &cn)
            .finalize()
            .into_bytes(),
    );
    s.write_all(&answer)?;
    s.flush()?;
    let verdict: [u8; 1 + N] = read_array(s)?;
    if verdict[0] != 1 {
        return Err(AuthError::Refused);
    }
    token
        .mac(EXECUTOR_LABEL, &en, &cn)
        .verify_slice(&verdict[1..])
        .map_err(|_| AuthError::BadExecutorProof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn token(c: char) -> Token {
        Token::parse(&c.to_string().repeat(64)).unwrap()
    }

    fn run(exec_tok: Token, ctl_tok: Token) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || executor_handshake(&mut a, &exec_tok));
        let c = controller_handshake(&mut b, &ctl_tok, None);
        (t.join().unwrap(), c)
    }

    #[test]
    fn same_token_is_accepted() {
        let (e, c) = run(token('a'), token('a'));
        assert!(e.is_ok() && c.is_ok(), "{e:?} {c:?}");
    }

    #[test]
    fn wrong_token_is_refused_on_both_sides() {
        let (e, c) = run(token('a'), token('b'));
        assert!(matches!(e, Err(AuthError::WrongToken)), "{e:?}");
        assert!(matches!(c, Err(AuthError::Refused)), "{c:?}");
    }

    #[test]
    fn tokens_must_be_long_hex() {
        assert!(Token::parse("abcd").is_err());
        assert!(Token::parse(&"g".repeat(64)).is_err());
        assert!(Token::parse(&format!(" {}\n", "0f".repeat(32))).is_ok());
    }

    #[test]
    fn hello_is_not_a_frame() {
        // A frame reader sees a size below the header, whatever it then does.
        let size = u64::from_le_bytes(MAGIC[..8].try_into().unwrap());
        assert!(size < crate::frame::HEADER_SIZE);
    }

    #[test]
    fn token_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("remjit-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::from_file(&f).unwrap_err();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ok = Token::from_file(&f);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("readable by others (mode 0644)"), "{e}");
        assert!(ok.is_ok());
    }
}
