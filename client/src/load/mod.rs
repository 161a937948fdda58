//! The modes of `ebb-load`. Each one is bounded in count and time and ends with a JSON summary.

pub mod echo;
pub mod hold;
pub mod soak;

use std::net::{IpAddr, Ipv4Addr};

/// Where connections come from: `count` loopback addresses starting at the `first`th
/// (`127.0.0.<first>`..; loopback answers on all of 127.0.0.0/8), so a generator can open more
/// connections than one address has ephemeral ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub first: usize,
    pub count: usize,
}

impl Default for Sources {
    fn default() -> Self {
        Sources { first: 1, count: 1 }
    }
}

impl Sources {
    /// The source of connection `i`; `None` (the kernel's choice) for the default single source.
    pub fn address(&self, i: usize) -> Option<IpAddr> {
        if *self == Sources::default() {
            return None;
        }
        let k = self.first - 1 + i % self.count.max(1);
        Some(IpAddr::V4(Ipv4Addr::new(
            127,
            (k / 62_500) as u8,
            (k / 250 % 250) as u8,
            (k % 250) as u8 + 1,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_over_loopback() {
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(Sources::default().address(7), None);
        let four = Sources { first: 1, count: 4 };
        assert_eq!(four.address(0), ip("127.0.0.1"));
        assert_eq!(four.address(5), ip("127.0.0.2"));
        let wide = Sources {
            first: 1,
            count: 300,
        };
        assert_eq!(wide.address(250), ip("127.0.1.1"));
        let shifted = Sources { first: 3, count: 1 };
        assert_eq!(shifted.address(9), ip("127.0.0.3"));
    }
}
