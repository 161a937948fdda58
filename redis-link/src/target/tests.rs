use super::*;

fn hp(host: &str, port: u16) -> HostPort {
    HostPort {
        host: host.into(),
        port,
    }
}

#[test]
fn single_server_forms() {
    let t = RedisTarget::parse("redis://127.0.0.1:6380/2").unwrap();
    assert_eq!(
        t.topology,
        Topology::Single {
            addr: hp("127.0.0.1", 6380),
            db: 2
        }
    );
    assert!(!t.tls);
    assert!(t.credentials.is_empty());

    let t = RedisTarget::parse("rediss://redis.internal").unwrap();
    assert!(t.tls);
    assert_eq!(
        t.topology,
        Topology::Single {
            addr: hp("redis.internal", DEFAULT_REDIS_PORT),
            db: 0
        }
    );

    let t = RedisTarget::parse("redis://[::1]:7000/").unwrap();
    assert_eq!(
        t.topology,
        Topology::Single {
            addr: hp("::1", 7000),
            db: 0
        }
    );
    assert_eq!(t.to_string(), "redis://[::1]:7000");
}

#[test]
fn sentinel_and_cluster_forms() {
    let t = RedisTarget::parse("redis+sentinel://u:p@s1:26379,s2:26380,s3/mymaster").unwrap();
    assert_eq!(
        t.topology,
        Topology::Sentinel {
            sentinels: vec![
                hp("s1", 26379),
                hp("s2", 26380),
                hp("s3", DEFAULT_SENTINEL_PORT)
            ],
            master: "mymaster".into(),
            db: 0
        }
    );
    assert_eq!(t.credentials.username.as_deref(), Some("u"));
    assert_eq!(t.credentials.password(), Some("p"));

    let t = RedisTarget::parse("redis+sentinel://s1:1/m-1.x/3").unwrap();
    assert!(matches!(t.topology, Topology::Sentinel { db: 3, .. }));

    let t = RedisTarget::parse("redis+cluster://a:7000,b:7001,c:7002").unwrap();
    assert_eq!(
        t.topology,
        Topology::Cluster {
            seeds: vec![hp("a", 7000), hp("b", 7001), hp("c", 7002)]
        }
    );
    let t = RedisTarget::parse("rediss+cluster://a:7000/").unwrap();
    assert!(t.tls);
}

#[test]
fn passwords_with_reserved_characters() {
    // Encoded.
    let t = RedisTarget::parse("redis://ebb:p%40ss%3Aw%2Fo%25rd@h:1").unwrap();
    assert_eq!(t.credentials.password(), Some("p@ss:w/o%rd"));
    // Unencoded '@' and ':' in the password: the last '@' and the first ':' split it.
    let t = RedisTarget::parse("redis://ebb:p@ss:word@h:1").unwrap();
    assert_eq!(t.credentials.username.as_deref(), Some("ebb"));
    assert_eq!(t.credentials.password(), Some("p@ss:word"));
    assert_eq!(
        t.topology,
        Topology::Single {
            addr: hp("h", 1),
            db: 0
        }
    );
    // The default user's password alone.
    let t = RedisTarget::parse("redis://:secret@h:1").unwrap();
    assert_eq!(t.credentials.username, None);
    assert_eq!(t.credentials.password(), Some("secret"));
}

#[test]
fn display_and_debug_never_show_the_password() {
    for url in [
        "redis://ebb:hunter2@h:1/4",
        "rediss://:hunter2@h:1",
        "redis+sentinel://ebb:hunter2@s1:1,s2:2/master",
        "redis+cluster://ebb:hunter2@a:1,b:2",
        "redis://ebb:hun%40ter2@h:1",
    ] {
        let t = RedisTarget::parse(url).unwrap();
        let shown = t.to_string();
        let debug = format!("{t:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hun@ter2"),
            "{shown}"
        );
        assert!(
            !debug.contains("hunter2") && !debug.contains("hun@ter2"),
            "{debug}"
        );
        assert!(shown.contains("***"), "{shown}");
        // What is shown parses back to the same target, password aside.
        let back = RedisTarget::parse(&shown).unwrap();
        assert_eq!(back.topology, t.topology);
        assert_eq!(back.credentials.username, t.credentials.username);
    }
    assert_eq!(
        RedisTarget::parse("redis+sentinel://ebb:x@s1:1,s2:2/master/2")
            .unwrap()
            .to_string(),
        "redis+sentinel://ebb:***@s1:1,s2:2/master/2"
    );
}

#[test]
fn bad_urls_name_what_is_wrong() {
    use TargetError::*;
    let cases: &[(&str, TargetError)] = &[
        ("127.0.0.1:6379", MissingScheme),
        ("http://h:1", UnknownScheme("http".into())),
        ("redis://", NoHost),
        ("redis+cluster://", NoHost),
        ("redis+sentinel:///master", NoHost),
        ("redis+cluster://a:1,,b:2", EmptyHost),
        ("redis+cluster://a:1,", EmptyHost),
        ("redis://:6379", EmptyHost),
        ("redis://a:1,b:2", SeveralHosts(2)),
        (
            "redis://h:99999",
            BadPort {
                host: "h".into(),
                port: "99999".into(),
            },
        ),
        (
            "redis://h:0",
            BadPort {
                host: "h".into(),
                port: "0".into(),
            },
        ),
        (
            "redis+sentinel://s1:abc/m",
            BadPort {
                host: "s1".into(),
                port: "abc".into(),
            },
        ),
        ("redis://[::1:6379", BadIpv6("[::1:6379".into())),
        ("redis://[nothex]:1", BadIpv6("[nothex]:1".into())),
        ("redis://h:1/x", BadDb("x".into())),
        ("redis://h:1/-1", BadDb("-1".into())),
        ("redis://h:1/+1", BadDb("+1".into())),
        ("redis://h:1/1/2", ExtraPath("/1/2".into())),
        ("redis+sentinel://s1:1", NoMasterName),
        ("redis+sentinel://s1:1/", NoMasterName),
        ("redis+sentinel://s1:1//2", NoMasterName),
        (
            "redis+sentinel://s1:1/ma ster",
            BadMasterName("ma ster".into()),
        ),
        ("redis+cluster://a:1/0", ClusterPath("/0".into())),
        ("redis://h:1?db=2", Query("db=2".into())),
        ("redis://u:p%zz@h:1", BadEncoding("password")),
        ("redis://u%4@h:1", BadEncoding("user name")),
        ("redis://ebb@h:1", UserWithoutPassword),
    ];
    for (url, want) in cases {
        assert_eq!(RedisTarget::parse(url).as_ref(), Err(want), "{url}");
    }
}

#[test]
fn error_messages_never_carry_the_password() {
    for url in [
        "redis://u:hunter2@h:99999",
        "redis://u:hunter2@a:1,b:2",
        "redis+sentinel://u:hunter2@s:1",
        "redis://u:hunter2@h:1/x",
    ] {
        let err = RedisTarget::parse(url).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn redis_ca_needs_tls() {
    let ca = Path::new("/tmp/ca.pem");
    let t = RedisTarget::parse("rediss://h:1")
        .unwrap()
        .with_ca(Some(ca))
        .unwrap();
    assert_eq!(t.ca_file.as_deref(), Some(ca));
    assert_eq!(
        RedisTarget::parse("redis://h:1").unwrap().with_ca(Some(ca)),
        Err(TargetError::CaWithoutTls)
    );
    assert!(
        RedisTarget::parse("redis://h:1")
            .unwrap()
            .with_ca(None)
            .is_ok()
    );
}
