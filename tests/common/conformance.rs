//! The backend contract every implementation must keep; run against local and S3 backends.

use lifeboat::Error;
use lifeboat::backend::{Backend, Payload, PutMode, PutOutcome};

pub fn conformance(b: &dyn Backend) {
    b.create().unwrap();
    assert!(matches!(
        b.get("snapshots/none", 1 << 30),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        b.get_range("snapshots/none", 0, 1),
        Err(Error::NotFound { .. })
    ));

    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    assert_eq!(
        b.put("data/ab/abcd", Payload::Bytes(&data), PutMode::Overwrite)
            .unwrap(),
        PutOutcome::Written
    );
    assert_eq!(b.get("data/ab/abcd", 1 << 30).unwrap(), data);
    assert_eq!(
        b.get_range("data/ab/abcd", 100, 50).unwrap(),
        &data[100..150]
    );
    assert_eq!(
        b.get_range("data/ab/abcd", 9_990, 10).unwrap(),
        &data[9_990..]
    );
    assert!(
        b.get_range("data/ab/abcd", 9_995, 10).is_err(),
        "a short read is an error"
    );

    // IfAbsent keeps the first object.
    assert_eq!(
        b.put("keys/k1", Payload::Bytes(b"first"), PutMode::IfAbsent)
            .unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        b.put("keys/k1", Payload::Bytes(b"second"), PutMode::IfAbsent)
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(b.get("keys/k1", 1 << 30).unwrap(), b"first");
    b.put("keys/k1", Payload::Bytes(b"third"), PutMode::Overwrite)
        .unwrap();
    assert_eq!(b.get("keys/k1", 1 << 30).unwrap(), b"third");

    // File payloads.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), b"from a file").unwrap();
    b.put("index/i1", Payload::File(tmp.path()), PutMode::Overwrite)
        .unwrap();
    assert_eq!(b.get("index/i1", 1 << 30).unwrap(), b"from a file");

    // Listing: complete, with sizes, only under the prefix.
    for i in 0..30 {
        b.put(
            &format!("data/{:02x}/pack{i}", i % 4),
            Payload::Bytes(&vec![1; i]),
            PutMode::Overwrite,
        )
        .unwrap();
    }
    let mut listed = b.list("data/").unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(listed.len(), 31);
    assert!(
        listed
            .iter()
            .any(|o| o.key == "data/ab/abcd" && o.size == 10_000)
    );
    assert!(
        listed
            .iter()
            .any(|o| o.key == "data/03/pack7" && o.size == 7)
    );
    assert_eq!(b.list("keys/").unwrap().len(), 1);
    assert!(b.list("snapshots/").unwrap().is_empty());

    b.delete("keys/k1").unwrap();
    b.delete("keys/k1").unwrap();
    assert!(matches!(
        b.get("keys/k1", 1 << 30),
        Err(Error::NotFound { .. })
    ));
    assert!(
        b.put("../escape", Payload::Bytes(b"x"), PutMode::Overwrite)
            .is_err()
    );
}
