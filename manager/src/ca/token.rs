//! Join tokens: `SHOAL-1-<root CA digest>-<secret>`, Swarm's SWMTKN-1 in Shoal's colours.
//!
//! A token does two jobs. Its digest lets the joiner authenticate the manager's CA before it
//! sends anything (so a token never leaks to an impostor), and its secret lets the manager
//! decide the joiner's role: there is one token per role, and rotating one only changes its
//! secret, so joined nodes (which hold certificates, not tokens) are unaffected.

use std::fmt;

use rand::Rng;

use super::identity::Role;
use super::root::CaDigest;

/// Every token starts with this (format version 1).
const PREFIX: &str = "SHOAL-1-";
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// 36^50 > 2^256: the sha256 digest in base 36.
const DIGEST_LEN: usize = 50;
/// 36^25 > 2^129: at least 128 bits of secret, as Swarm's.
const SECRET_LEN: usize = 25;
const SHAPE: &str = "SHOAL-1-<50 base-36 characters>-<25 base-36 characters>";

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the join token is malformed: {problem}; a token looks like {SHAPE}: copy it again \
         from `shoal cluster join-token worker` (or `manager`) on a manager"
    )]
    Malformed { problem: String },

    #[error(
        "the join token belongs to another cluster: it pins root CA {token_ca} but this \
         cluster's CA is {cluster_ca}; get a token from a manager of the cluster you mean to join"
    )]
    WrongCluster {
        token_ca: CaDigest,
        cluster_ca: CaDigest,
    },

    #[error(
        "the join token's secret is not valid (it may have been rotated); get the current one \
         with `shoal cluster join-token worker` (or `manager`) on a manager"
    )]
    InvalidSecret,
}

fn malformed(problem: impl Into<String>) -> TokenError {
    TokenError::Malformed {
        problem: problem.into(),
    }
}

/// One join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    ca_digest: CaDigest,
    secret: String,
}

impl fmt::Debug for JoinToken {
    // The secret is a credential: keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}-{}",
            encode_base36(&self.ca_digest.0, DIGEST_LEN),
            self.secret
        )
    }
}

impl JoinToken {
    /// A new token for the CA with `ca_digest`, with a fresh random secret.
    pub fn generate(ca_digest: CaDigest) -> JoinToken {
        Self::generate_with(ca_digest, &mut rand::rng())
    }

    /// As `generate`, from the given randomness (seeded in tests).
    pub fn generate_with(ca_digest: CaDigest, rng: &mut impl Rng) -> JoinToken {
        let secret = (0..SECRET_LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        JoinToken { ca_digest, secret }
    }

    /// The same CA with a new secret: the old token stops working for new joins.
    pub fn rotate(&self) -> JoinToken {
        Self::generate(self.ca_digest)
    }

    /// Parses a token as printed by `join-token` (surrounding whitespace is ignored).
    pub fn parse(s: &str) -> Result<JoinToken, TokenError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(malformed("it is empty"));
        }
        let rest = s.strip_prefix(PREFIX).ok_or_else(|| {
            if s.starts_with("SWMTKN-") {
                malformed("it is a Docker Swarm token, not a Shoal one")
            } else if s.starts_with("SHOAL-") {
                malformed("it is of an unknown version (this shoal understands SHOAL-1)")
            } else {
                malformed(format!("it does not start with {PREFIX:?}"))
            }
        })?;
        let (digest, secret) = rest
            .split_once('-')
            .ok_or_else(|| malformed("it has no '-' between the CA digest and the secret"))?;
        let check = |part: &str, what: &str, len: usize| {
            if part.len() != len {
                return Err(malformed(format!(
                    "its {what} has {} characters instead of {len}",
                    part.chars().count()
                )));
            }
            match part.bytes().find(|b| !ALPHABET.contains(b)) {
                Some(b) => Err(malformed(format!(
                    "its {what} contains {:?}, which is not a lower-case letter or digit",
                    b as char
                ))),
                None => Ok(()),
            }
        };
        check(digest, "CA digest", DIGEST_LEN)?;
        check(secret, "secret", SECRET_LEN)?;
        let digest = decode_base36::<32>(digest)
            .ok_or_else(|| malformed("its CA digest is larger than a sha256 digest"))?;
        Ok(JoinToken {
            ca_digest: CaDigest(digest),
            secret: secret.to_string(),
        })
    }

    /// The root CA this token pins.
    pub fn ca_digest(&self) -> CaDigest {
        self.ca_digest
    }

    /// Whether both tokens carry the same secret, in time independent of where they differ.
    pub fn secret_matches(&self, other: &JoinToken) -> bool {
        constant_time_eq(self.secret.as_bytes(), other.secret.as_bytes())
    }
}

/// The cluster's two tokens, as kept in the Cluster object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTokens {
    pub worker: JoinToken,
    pub manager: JoinToken,
}

impl JoinTokens {
    /// Fresh tokens for both roles.
    pub fn generate(ca_digest: CaDigest) -> JoinTokens {
        JoinTokens {
            worker: JoinToken::generate(ca_digest),
            manager: JoinToken::generate(ca_digest),
        }
    }

    /// The role a presented token grants, or why it grants none. The role comes only from
    /// which secret matched, never from anything else the joiner says.
    pub fn role_for(&self, presented: &JoinToken) -> Result<Role, TokenError> {
        if presented.ca_digest != self.worker.ca_digest {
            return Err(TokenError::WrongCluster {
                token_ca: presented.ca_digest,
                cluster_ca: self.worker.ca_digest,
            });
        }
        // Compare against both before deciding, so timing says nothing about which matched.
        let worker = presented.secret_matches(&self.worker);
        let manager = presented.secret_matches(&self.manager);
        match (manager, worker) {
            (true, _) => Ok(Role::Manager),
            (false, true) => Ok(Role::Worker),
            (false, false) => Err(TokenError::InvalidSecret),
        }
    }

    /// The token of a role; admins join with neither.
    pub fn for_role(&self, role: Role) -> Option<&JoinToken> {
        match role {
            Role::Worker => Some(&self.worker),
            Role::Manager => Some(&self.manager),
            Role::Admin => None,
        }
    }

    /// Reads the tokens stored in the Cluster object.
    pub fn from_proto(p: &shoal_proto::JoinTokens) -> Result<JoinTokens, TokenError> {
        Ok(JoinTokens {
            worker: JoinToken::parse(&p.worker)?,
            manager: JoinToken::parse(&p.manager)?,
        })
    }

    pub fn to_proto(&self) -> shoal_proto::JoinTokens {
        shoal_proto::JoinTokens {
            worker: self.worker.to_string(),
            manager: self.manager.to_string(),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Lengths are public (both are SECRET_LEN for well-formed tokens).
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Big-endian bytes as base 36, left-padded with '0' to `width`.
fn encode_base36(bytes: &[u8], width: usize) -> String {
    let mut num = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    // Schoolbook division by 36 until the number is zero.
    while num.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(ALPHABET[rem as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.iter().rev().map(|&d| d as char).collect()
}

/// Base 36 back to `N` big-endian bytes; None when it does not fit or has a bad character.
fn decode_base36<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for c in s.bytes() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u32;
        // out = out * 36 + digit, from the least significant byte up.
        let mut carry = digit;
        for b in out.iter_mut().rev() {
            let cur = u32::from(*b) * 36 + carry;
            *b = (cur & 0xff) as u8;
            carry = cur >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn digest(seed: u8) -> CaDigest {
        CaDigest::of(&[seed; 40])
    }

    #[test]
    fn token_round_trips_and_has_swarm_shape() {
        let t = JoinToken::generate_with(digest(1), &mut StdRng::seed_from_u64(7));
        let s = t.to_string();
        assert!(s.starts_with("SHOAL-1-"), "{s}");
        assert_eq!(s.len(), PREFIX.len() + DIGEST_LEN + 1 + SECRET_LEN, "{s}");
        let back = JoinToken::parse(&format!("  {s}\n")).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.ca_digest(), digest(1));
        // The secret never shows in Debug output.
        assert!(!format!("{t:?}").contains(&s[s.len() - SECRET_LEN..]));
    }

    #[test]
    fn base36_round_trips_extremes() {
        for bytes in [[0u8; 32], [0xff; 32], {
            let mut b = [0u8; 32];
            b[31] = 35;
            b
        }] {
            let s = encode_base36(&bytes, DIGEST_LEN);
            assert_eq!(s.len(), DIGEST_LEN);
            assert_eq!(decode_base36::<32>(&s), Some(bytes));
        }
        // The largest 50-digit base-36 number exceeds 2^256.
        assert_eq!(decode_base36::<32>(&"z".repeat(DIGEST_LEN)), None);
    }

    #[test]
    fn malformed_tokens_name_the_problem_and_the_shape() {
        let good = JoinToken::generate(digest(2)).to_string();
        let (digest_part, secret_part) = good[PREFIX.len()..].split_once('-').unwrap();
        let cases = [
            (String::new(), "empty"),
            ("SWMTKN-1-abc-def".to_string(), "Docker Swarm token"),
            ("SHOAL-2-abc-def".to_string(), "unknown version"),
            ("hello".to_string(), "does not start with"),
            (format!("SHOAL-1-{digest_part}{secret_part}"), "no '-'"),
            (
                format!("SHOAL-1-{digest_part}-{}", &secret_part[1..]),
                "secret has 24",
            ),
            (
                format!("SHOAL-1-{}-{secret_part}", &digest_part[2..]),
                "CA digest has 48",
            ),
            (
                format!("SHOAL-1-{digest_part}-{}", secret_part.to_uppercase()),
                "not a lower-case",
            ),
            (
                format!("SHOAL-1-{}-{secret_part}", "z".repeat(DIGEST_LEN)),
                "larger than a sha256",
            ),
        ];
        for (token, expected) in cases {
            let err = JoinToken::parse(&token).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(expected), "{token:?}: {msg}");
            assert!(msg.contains(SHAPE), "{token:?}: {msg}");
        }
    }

    #[test]
    fn role_comes_from_the_matching_secret_and_rotation_invalidates() {
        let tokens = JoinTokens::generate(digest(3));
        assert_eq!(tokens.role_for(&tokens.worker), Ok(Role::Worker));
        assert_eq!(tokens.role_for(&tokens.manager), Ok(Role::Manager));

        let rotated = JoinTokens {
            worker: tokens.worker.rotate(),
            ..tokens.clone()
        };
        assert_eq!(
            rotated.role_for(&tokens.worker),
            Err(TokenError::InvalidSecret)
        );
        assert_eq!(rotated.role_for(&tokens.manager), Ok(Role::Manager));

        let foreign = JoinToken::generate(digest(4));
        assert!(matches!(
            tokens.role_for(&foreign),
            Err(TokenError::WrongCluster { .. })
        ));
        // Same secret, other CA: still refused, by the digest.
        let mut same_secret = tokens.worker.clone();
        same_secret.ca_digest = digest(4);
        assert!(matches!(
            tokens.role_for(&same_secret),
            Err(TokenError::WrongCluster { .. })
        ));
    }

    #[test]
    fn tokens_survive_the_cluster_object() {
        let tokens = JoinTokens::generate(digest(5));
        assert_eq!(JoinTokens::from_proto(&tokens.to_proto()), Ok(tokens));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
