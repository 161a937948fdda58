//! The flags of the benchmarks (`tests/benches/`): `--name <number>` pairs over defaults. Cargo
//! passes `--bench` to every benchmark binary; it is accepted and ignored.

use std::collections::BTreeMap;

/// Parsed numeric flags.
#[derive(Debug, Clone)]
pub struct Flags(BTreeMap<String, u64>);

impl Flags {
    /// Reads the process arguments over `defaults`; an unknown flag or a missing number panics
    /// with the flags this benchmark knows.
    pub fn parse(defaults: &[(&str, u64)]) -> Flags {
        let mut flags: BTreeMap<String, u64> =
            defaults.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let known = || flags_list(defaults);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            let Some(name) = arg.strip_prefix("--").filter(|n| flags.contains_key(*n)) else {
                panic!("unknown flag {arg}; known: {}", known());
            };
            let value = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"));
            flags.insert(name.to_owned(), value);
        }
        Flags(flags)
    }

    /// The value of flag `name` (one of the defaults).
    pub fn get(&self, name: &str) -> u64 {
        self.0[name]
    }
}

fn flags_list(defaults: &[(&str, u64)]) -> String {
    defaults
        .iter()
        .map(|(k, v)| format!("--{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
