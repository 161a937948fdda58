//! `--redis` and `--redis-ca` as clap flags, shared by every binary.
//!
//! Why not `value_parser = RedisTarget::parse`: clap's own message for a rejected value quotes
//! the value, and a `--redis` URL carries the password. [`TargetParser`] reports what is wrong
//! (a [`TargetError`](crate::TargetError)) and never the URL itself.

use crate::target::RedisTarget;
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// Parses `--redis` into a [`RedisTarget`]; a bad URL is a usage error (exit 2) that names the
/// fault and not the URL.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetParser;

impl TypedValueParser for TargetParser {
    type Value = RedisTarget;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<RedisTarget, clap::Error> {
        let flag = arg.map_or_else(|| "--redis".to_owned(), |a| a.to_string());
        // A raw message: clap's own for a rejected value would quote the value, which may hold
        // a password.
        let invalid = |reason: String| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value for '{flag}': {reason}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("the URL is not valid UTF-8".into()))?;
        RedisTarget::parse(text).map_err(|e| invalid(e.to_string()))
    }
}

/// Adds `--redis-ca` to a parsed target as a usage error on failure, in clap's words: for the
/// binaries, after `Parser::parse`, so both flags and their environment variables have been read.
pub fn with_ca(
    target: RedisTarget,
    ca: Option<&std::path::Path>,
) -> Result<RedisTarget, clap::Error> {
    target
        .with_ca(ca)
        .map_err(|e| clap::Error::raw(ErrorKind::ArgumentConflict, format!("--redis-ca: {e}\n")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[arg(long, value_parser = TargetParser)]
        redis: RedisTarget,
    }

    #[test]
    fn a_bad_url_is_refused_without_quoting_it() {
        let err = Args::try_parse_from(["t", "--redis", "redis://u:hunter2@h:99999"]).unwrap_err();
        let text = err.render().to_string();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("--redis"), "{text}");
        assert!(text.contains("bad port"), "{text}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_good_url_parses_to_its_target() {
        let args = Args::try_parse_from(["t", "--redis", "rediss://:pw@h:6380/2"]).unwrap();
        assert!(args.redis.tls);
        assert_eq!(args.redis.to_string(), "rediss://:***@h:6380/2");
    }

    #[test]
    fn a_ca_without_tls_is_a_usage_error() {
        let target = RedisTarget::parse("redis://h").unwrap();
        let err = with_ca(target, Some(std::path::Path::new("/ca.pem"))).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("rediss://"), "{err}");
    }
}
