//! Spec versions: which this plugin speaks, and comparing them.

/// Every version hns-cni reads configs and writes results in. 0.3.x results are 0.4.0's shape.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The version of a VERSION answer when the runtime names none.
pub const LATEST: &str = "1.1.0";

fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// `v >= min` (both dotted triples; an unparsable `v` is never at least anything).
pub fn at_least(v: &str, min: &str) -> bool {
    matches!((parse(v), parse(min)), (Some(a), Some(b)) if a >= b)
}

pub fn is_supported(v: &str) -> bool {
    SUPPORTED.contains(&v)
}

/// The highest supported version among `candidates` (a conflist's `cniVersion` + `cniVersions`).
pub fn highest_supported<'a>(candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates.into_iter().filter(|v| is_supported(v)).max_by_key(|v| parse(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_picks() {
        assert!(at_least("1.0.0", "0.4.0") && at_least("1.1.0", "1.1.0") && !at_least("0.3.1", "0.4.0"));
        assert!(!at_least("x", "0.1.0") && !at_least("1.0", "0.1.0"));
        assert_eq!(highest_supported(["0.4.0", "1.1.0", "9.9.9", "1.0.0"]), Some("1.1.0"));
        assert_eq!(highest_supported(["2.0.0"]), None);
    }
}
