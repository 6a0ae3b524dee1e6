//! HTTP `Range` (RFC 9110 §14) for single byte ranges. Multi-range requests and syntactically
//! invalid headers are ignored (a full 200 is a correct answer to both, X-03); a range that
//! starts past the end is unsatisfiable (416).

use http::{HeaderMap, header};

/// `None`: serve the whole object. `Some(Ok((start, end)))`: serve `start..end` (end
/// exclusive). `Some(Err(()))`: unsatisfiable.
pub fn parse(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let v = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let spec = v.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        // Suffix range: the last N bytes.
        if !digits(b) {
            return None;
        }
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok((size.saturating_sub(n), size)));
    }
    if !digits(a) || !(b.is_empty() || digits(b)) {
        return None;
    }
    let start: u64 = a.parse().ok()?;
    let last: Option<u64> = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    if last.is_some_and(|l| l < start) {
        return None;
    }
    if start >= size {
        return Some(Err(()));
    }
    let end = last.map_or(size, |l| l.saturating_add(1).min(size));
    Some(Ok((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(range: &str, size: u64, expected: Option<Result<(u64, u64), ()>>) {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, range.parse().unwrap());
        assert_eq!(parse(&h, size), expected, "{range} of {size}");
    }

    #[test]
    fn ranges() {
        check("bytes=0-", 10, Some(Ok((0, 10))));
        check("bytes=3-", 10, Some(Ok((3, 10))));
        check("bytes=3-5", 10, Some(Ok((3, 6))));
        check("bytes=3-500", 10, Some(Ok((3, 10))));
        check("bytes=-4", 10, Some(Ok((6, 10))));
        check("bytes=-40", 10, Some(Ok((0, 10))));
        check("bytes=10-", 10, Some(Err(())));
        check("bytes=11-20", 10, Some(Err(())));
        check("bytes=-0", 10, Some(Err(())));
        check("bytes=0-1,4-5", 10, None);
        check("bytes=5-3", 10, None);
        check("items=0-1", 10, None);
        check("bytes=a-b", 10, None);
        check("bytes=99999999999999999999999-", 10, None);
        check("bytes=", 10, None);
    }
}
