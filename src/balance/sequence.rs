//! nginx's smooth weighted round robin, unrolled into one period of picks.
//!
//! Each round every member adds its weight to its current value, the largest current value wins
//! (the first one on ties) and loses the total weight. The picks repeat with a period of the
//! weights' sum divided by their gcd, so one period is precomputed per snapshot and the data
//! plane walks it with an atomic cursor.

/// One period of smooth weighted round robin over `(index, weight)` members.
pub fn smooth_weighted(members: impl IntoIterator<Item = (u32, u32)>) -> Vec<u32> {
    let members: Vec<(u32, u32)> = members.into_iter().filter(|m| m.1 > 0).collect();
    let g = members.iter().fold(0, |g, m| gcd(g, m.1));
    if g == 0 {
        return Vec::new();
    }
    let weights: Vec<i64> = members.iter().map(|m| i64::from(m.1 / g)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; members.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (k, w) in weights.iter().enumerate() {
            current[k] += w;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        out.push(members[best].0);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::smooth_weighted;

    #[test]
    fn matches_nginx_for_5_1_1() {
        // nginx's documented sequence for weights a=5, b=1, c=1.
        let seq = smooth_weighted([(0, 5), (1, 1), (2, 1)]);
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn period_reduces_by_gcd_and_skips_zero() {
        assert_eq!(smooth_weighted([(0, 2), (1, 2), (2, 0)]), vec![0, 1]);
        assert!(smooth_weighted([]).is_empty());
    }
}
