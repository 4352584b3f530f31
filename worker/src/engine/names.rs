//! Docker-style generated container names (`brave_lovelace`): easier to type than an ID.

const ADJECTIVES: [&str; 24] = [
    "admiring", "agile", "bold", "brave", "calm", "clever", "eager", "fervent", "gentle", "happy",
    "jolly", "keen", "lucid", "merry", "nimble", "quiet", "relaxed", "serene", "sharp", "stoic",
    "tender", "vibrant", "wise", "zealous",
];
const NAMES: [&str; 24] = [
    "babbage", "curie", "darwin", "dijkstra", "einstein", "euler", "fermat", "galileo", "hopper",
    "hypatia", "kepler", "knuth", "lamport", "liskov", "lovelace", "mccarthy", "noether", "pascal",
    "ritchie", "shannon", "thompson", "torvalds", "turing", "wozniak",
];

/// A name from two random bytes; the caller retries or suffixes on a clash.
pub fn generate(random: &[u8]) -> String {
    let a = random.first().copied().unwrap_or(0) as usize % ADJECTIVES.len();
    let n = random.get(1).copied().unwrap_or(0) as usize % NAMES.len();
    format!("{}_{}", ADJECTIVES[a], NAMES[n])
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() >= 2
        && name.len() <= 128
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_generated_and_checked() {
        assert_eq!(generate(&[3, 14]), "brave_lovelace");
        assert!(valid("web-1") && valid("a.b_c"));
        assert!(!valid("-x") && !valid("a b") && !valid("x") && !valid("../etc"));
    }
}
