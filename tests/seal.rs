//! Sealing as the provider and the LA see it: round trips, refusals of wrong
//! keys and damaged files, the header check the endpoint relies on,
//! interoperability with the standard `age` tool, and the `keygen` and
//! `decrypt` commands.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mishare::seal::{
    self, Identities, Recipients, SealError, Sealed, check_header, is_age_v1, open, seal,
    seal_reader,
};
use sha2::{Digest, Sha256};

/// A temporary directory with one LA key in it.
struct La {
    dir: tempfile::TempDir,
    key: PathBuf,
    recipient: String,
}

impl La {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("key.txt");
        let recipient = seal::generate(&key).expect("generate a key");
        La {
            dir,
            key,
            recipient,
        }
    }

    fn recipients(&self) -> Recipients {
        Recipients::parse(&[self.recipient.as_str()]).expect("our own recipient parses")
    }

    fn identities(&self) -> Identities {
        Identities::load(&self.key).expect("our own key loads")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal(plaintext, &self.recipients(), &mut out).expect("seal");
        out
    }
}

/// Decrypts `ciphertext` completely, or gives the first error.
fn open_all(ciphertext: &[u8], ids: &Identities) -> Result<Vec<u8>, String> {
    let mut reader = open(ciphertext, ids).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match reader.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => Err(match SealError::from_io(&e) {
            Some(inner) => inner.to_string(),
            None => e.to_string(),
        }),
    }
}

/// Deterministic, incompressible-looking test data.
fn data(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

// ---------------------------------------------------------------------------
// Round trips

#[test]
fn round_trips_empty_small_and_multi_mib_plaintext() {
    let la = La::new();
    let ids = la.identities();
    // 64 KiB is age's chunk size: exact multiples are an edge of its format.
    for len in [0, 1, 100, 64 * 1024, 128 * 1024, 5 * 1024 * 1024 + 7] {
        let plaintext = data(len);

        let mut out = Vec::new();
        let sealed = seal(&plaintext, &la.recipients(), &mut out).expect("seal");
        assert_eq!(sealed.size, out.len() as u64, "len {len}");
        assert_eq!(sealed.sha256, digest(&out), "len {len}");
        assert!(is_age_v1(&out));
        assert_eq!(open_all(&out, &ids).expect("open"), plaintext, "len {len}");

        let mut out2 = Vec::new();
        let sealed2 = seal_reader(&plaintext[..], &la.recipients(), &mut out2).expect("seal");
        assert_eq!(
            sealed2,
            Sealed {
                size: out2.len() as u64,
                sha256: digest(&out2)
            }
        );
        assert_eq!(open_all(&out2, &ids).expect("open"), plaintext, "len {len}");
    }
}

#[test]
fn seal_reader_reads_through_a_bounded_buffer() {
    /// Fails the test if asked for more than 1 MiB in one read.
    struct Watch(std::io::Take<std::io::Repeat>);
    impl Read for Watch {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            assert!(
                buf.len() <= 1 << 20,
                "asked for {} bytes at once",
                buf.len()
            );
            self.0.read(buf)
        }
    }
    let la = La::new();
    let len = 20 * 1024 * 1024;
    let mut sink = Vec::new();
    let sealed = seal_reader(
        Watch(std::io::repeat(7).take(len)),
        &la.recipients(),
        &mut sink,
    )
    .expect("seal");
    assert_eq!(sealed.size, sink.len() as u64);
    let plain = open_all(&sink, &la.identities()).expect("open");
    assert_eq!(plain.len() as u64, len);
    assert!(plain.iter().all(|&b| b == 7));
}

#[test]
fn two_seals_of_the_same_plaintext_differ_and_both_open() {
    let la = La::new();
    let plaintext = b"la_code,referrals\nE09000002,40\n";
    let a = la.seal(plaintext);
    let b = la.seal(plaintext);
    assert_ne!(a, b, "each seal must use a fresh file key");
    assert_ne!(digest(&a), digest(&b));
    let ids = la.identities();
    assert_eq!(open_all(&a, &ids).expect("open a"), plaintext);
    assert_eq!(open_all(&b, &ids).expect("open b"), plaintext);
}

#[test]
fn a_file_for_several_recipients_opens_with_each_key() {
    let (one, two) = (La::new(), La::new());
    let recipients = Recipients::parse(&[&one.recipient, &two.recipient]).expect("two recipients");
    assert_eq!(recipients.len(), 2);
    let mut out = Vec::new();
    seal(b"shared", &recipients, &mut out).expect("seal");
    assert_eq!(open_all(&out, &one.identities()).expect("one"), b"shared");
    assert_eq!(open_all(&out, &two.identities()).expect("two"), b"shared");
}

// ---------------------------------------------------------------------------
// Refusals

#[test]
fn a_wrong_identity_is_refused_with_the_message() {
    let (ours, theirs) = (La::new(), La::new());
    let sealed = ours.seal(b"for us");
    let err = open(&sealed[..], &theirs.identities()).expect_err("wrong key");
    assert!(matches!(err, SealError::WrongIdentity { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "none of the identities in {} can open this file; is it for another LA?",
            theirs.key.display()
        )
    );
}

#[test]
fn truncated_ciphertext_never_opens() {
    let la = La::new();
    let ids = la.identities();
    let plaintext = data(200 * 1024);
    let sealed = la.seal(&plaintext);
    let header_end = sealed
        .windows(4)
        .position(|w| w == b"--- ")
        .expect("a MAC line");
    let mut cuts = vec![0, 10, header_end, header_end + 60, sealed.len() - 1];
    // Just after each full encrypted chunk (64 KiB + 16), and mid-chunk.
    let payload_start = sealed.len() - (plaintext.len() + 4 * 16);
    for k in 1..=3 {
        cuts.push(payload_start + k * (64 * 1024 + 16));
        cuts.push(payload_start + k * (64 * 1024 + 16) - 500);
    }
    for cut in cuts {
        let result = open_all(&sealed[..cut], &ids);
        assert!(
            result.is_err(),
            "a file cut at {cut} of {} opened",
            sealed.len()
        );
    }
    // Data after the last chunk is refused too.
    let mut longer = sealed.clone();
    longer.extend_from_slice(b"more");
    assert!(open_all(&longer, &ids).is_err());
}

#[test]
fn a_flipped_bit_anywhere_is_refused() {
    let la = La::new();
    let ids = la.identities();
    let plaintext = data(300);
    let sealed = la.seal(&plaintext);
    for i in 0..sealed.len() {
        for bit in [0x01, 0x80] {
            let mut bad = sealed.clone();
            bad[i] ^= bit;
            if let Ok(out) = open_all(&bad, &ids) {
                panic!(
                    "byte {i} ^ {bit:#x} opened (same plaintext: {})",
                    out == plaintext
                );
            }
        }
    }
}

#[test]
fn a_damaged_payload_says_so() {
    let la = La::new();
    let mut sealed = la.seal(&data(1000));
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    let err = open_all(&sealed, &la.identities()).expect_err("damaged");
    assert!(
        err.starts_with("the encrypted file is damaged or incomplete"),
        "{err}"
    );
    assert!(err.contains("ask the provider to send it again"), "{err}");
}

// ---------------------------------------------------------------------------
// The header check

#[test]
fn check_header_accepts_a_sealed_file_and_refuses_others() {
    let la = La::new();
    let sealed = la.seal(b"x");
    check_header(&sealed[..]).expect("a sealed file");

    let random = data(4096);
    assert!(matches!(check_header(&random[..]), Err(SealError::NotAge)));

    let text = b"la_code,referrals\nE09000002,40\n";
    assert!(matches!(check_header(&text[..]), Err(SealError::NotAge)));
    assert!(!is_age_v1(text));

    let err = check_header(&b""[..]).expect_err("empty");
    assert!(matches!(err, SealError::TruncatedHeader), "{err:?}");

    // The magic line alone, or a header cut before its MAC.
    let err = check_header(&sealed[..30]).expect_err("cut");
    assert!(matches!(err, SealError::TruncatedHeader), "{err:?}");

    // The right magic, then rubbish.
    let mut fake = b"age-encryption.org/v1\n".to_vec();
    fake.extend_from_slice(b"hello\n--- AAAA\n");
    assert!(is_age_v1(&fake));
    assert!(check_header(&fake[..]).is_err());

    // Some other age version.
    let err = check_header(&b"age-encryption.org/v2\nwhatever\n"[..]).expect_err("v2");
    assert!(
        matches!(err, SealError::UnknownFormat | SealError::NotAge),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------
// Recipients, identity files and key generation

#[test]
fn bad_recipients_are_named_by_index_and_truncated() {
    let la = La::new();
    let cases: &[(&[&str], usize, &str)] = &[
        (&[&la.recipient, "age1notarealkeyatall"], 1, "age1notareal…"),
        (
            &["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"],
            0,
            "ssh-ed25519 …",
        ),
        (&[""], 0, ""),
    ];
    for (entries, index, shown) in cases {
        let err = Recipients::parse(entries).expect_err("bad entry");
        match &err {
            SealError::BadRecipient {
                index: i, shown: s, ..
            } => {
                assert_eq!(i, index, "{err}");
                assert_eq!(s, shown, "{err}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with(&format!("recipients[{index}] "))
        );
    }
    let empty: &[&str] = &[];
    assert!(matches!(
        Recipients::parse(empty),
        Err(SealError::NoRecipients)
    ));
    // Whitespace around a pasted key is harmless.
    Recipients::parse(&[format!("  {} ", la.recipient)]).expect("trimmed");
}

#[test]
fn generate_writes_the_standard_format_owner_only_and_never_overwrites() {
    let la = La::new();
    let text = std::fs::read_to_string(&la.key).expect("read key");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let created = lines[0].strip_prefix("# created: ").expect("created line");
    chrono::DateTime::parse_from_rfc3339(created).expect("RFC 3339");
    assert_eq!(lines[1], format!("# public key: {}", la.recipient));
    assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));
    assert!(la.recipient.starts_with("age1") && la.recipient.len() == 62);
    assert_eq!(la.identities().recipients(), vec![la.recipient.clone()]);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&la.key)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    let err = seal::generate(&la.key).expect_err("exists");
    assert!(matches!(err, SealError::KeyFileExists { .. }), "{err:?}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&la.key).expect("read key"),
        text,
        "the old key must be untouched"
    );
}

#[test]
fn identity_files_are_read_as_age_reads_them_and_errors_say_where() {
    let la = La::new();
    let text = std::fs::read_to_string(&la.key).expect("read key");

    // CRLF endings, blank lines and extra comments are fine.
    let crlf = la.path("crlf.txt");
    std::fs::write(
        &crlf,
        format!("\r\n# mine\r\n{}", text.replace('\n', "\r\n")),
    )
    .expect("w");
    let ids = Identities::load(&crlf).expect("CRLF file");
    assert_eq!(ids.recipients(), vec![la.recipient.clone()]);

    let missing = la.path("missing.txt");
    let err = Identities::load(&missing).expect_err("missing");
    assert!(err.to_string().contains("missing.txt"), "{err}");

    let public = la.path("public.txt");
    std::fs::write(&public, format!("# a comment\n{}\n", la.recipient)).expect("w");
    let err = Identities::load(&public).expect_err("a public key");
    let msg = err.to_string();
    assert!(msg.contains("public.txt, line 2: "), "{msg}");
    assert!(msg.contains("public key"), "{msg}");

    let comments = la.path("comments.txt");
    std::fs::write(&comments, "# nothing here\n\n").expect("w");
    let err = Identities::load(&comments).expect_err("no keys");
    assert!(
        matches!(err, SealError::IdentityFileEmpty { .. }),
        "{err:?}"
    );

    // A damaged key line is reported by number, and its text never shown.
    let secret = text.lines().nth(2).expect("key line");
    let broken = la.path("broken.txt");
    std::fs::write(&broken, format!("{}x\n", &secret[..secret.len() - 1])).expect("w");
    let err = Identities::load(&broken).expect_err("damaged key");
    let msg = err.to_string();
    assert!(msg.contains("line 1"), "{msg}");
    assert!(!msg.contains(&secret[16..]), "{msg}");

    let sealed = la.path("file.age");
    std::fs::write(&sealed, la.seal(b"x")).expect("w");
    let err = Identities::load(&sealed).expect_err("an encrypted file");
    assert!(
        matches!(err, SealError::IdentityFileInvalid { .. }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------
// Interoperability with the standard age tool (Debian's `age` package)

/// The path to `name` (`age` or `age-keygen`); fails, never skips, when it is
/// missing: the LAs' promise is that the standard tool opens every file.
fn age_tool(name: &str) -> PathBuf {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the `{name}` command is not installed, and the interoperability tests need it: \
         install Debian's `age` package (apt-get install age)"
    );
    PathBuf::from(name)
}

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("run command");
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn age_decrypts_what_mishare_seals() {
    let age = age_tool("age");
    let la = La::new();
    for len in [0, 31, 64 * 1024, 3 * 1024 * 1024 + 5] {
        let plaintext = data(len);
        let file = la.path("report.age");
        std::fs::write(&file, la.seal(&plaintext)).expect("write sealed");
        let out = run(Command::new(&age)
            .arg("-d")
            .arg("-i")
            .arg(&la.key)
            .arg(&file));
        assert!(out.stdout == plaintext, "len {len}: age gave other bytes");
    }
}

#[test]
fn age_keygen_agrees_on_a_mishare_key_and_mishare_opens_age_keygen_keys() {
    let age_keygen = age_tool("age-keygen");
    let age = age_tool("age");
    let la = La::new();
    let out = run(Command::new(&age_keygen).arg("-y").arg(&la.key));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), la.recipient);

    // The other way: a key from age-keygen, used by mishare.
    let key = la.path("age-keygen.txt");
    let out = run(Command::new(&age_keygen).arg("-o").arg(&key));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let recipient = stderr
        .trim()
        .strip_prefix("Public key: ")
        .expect("age-keygen prints the public key");
    let ids = Identities::load(&key).expect("age-keygen's file loads");
    assert_eq!(ids.recipients(), vec![recipient.to_string()]);
    let mut sealed = Vec::new();
    seal(
        b"both ways",
        &Recipients::parse(&[recipient]).expect("recipient"),
        &mut sealed,
    )
    .expect("seal");
    let file = la.path("x.age");
    std::fs::write(&file, &sealed).expect("w");
    let out = run(Command::new(&age).arg("-d").arg("-i").arg(&key).arg(&file));
    assert_eq!(out.stdout, b"both ways");
}

#[test]
fn mishare_decrypt_opens_what_age_encrypts_to_a_mishare_keygen_key() {
    let age = age_tool("age");
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("la.key");
    let keygen = mishare(dir.path(), &["keygen", "--out", "la.key"]);
    assert_eq!(keygen.status.code(), Some(0), "{}", stderr(&keygen));
    let recipient = String::from_utf8(keygen.stdout).expect("utf8");
    let recipient = recipient.trim();
    assert!(recipient.starts_with("age1"), "{recipient}");

    let plaintext = data(200 * 1024);
    let plain = dir.path().join("report.csv");
    std::fs::write(&plain, &plaintext).expect("w");
    let file = dir.path().join("report.csv.age");
    run(Command::new(&age)
        .arg("-r")
        .arg(recipient)
        .arg("-o")
        .arg(&file)
        .arg(&plain));

    let out = mishare(
        dir.path(),
        &["decrypt", "report.csv.age", "--identity", "la.key"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout == plaintext, "mishare decrypt gave other bytes");

    // And through the library, with the same key.
    let ids = Identities::load(&key).expect("load");
    let bytes = std::fs::read(&file).expect("read");
    check_header(&bytes[..]).expect("age's file has a valid header");
    assert_eq!(open_all(&bytes, &ids).expect("open"), plaintext);
}

// ---------------------------------------------------------------------------
// The commands

fn mishare(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mishare"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run mishare")
}

/// `mishare decrypt FILE --identity KEY --out out.csv` in `dir`.
fn decrypt_to_out_csv(dir: &Path, file: &str, key: &str) -> Output {
    mishare(
        dir,
        &["decrypt", file, "--identity", key, "--out", "out.csv"],
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn keygen_prints_the_recipient_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = mishare(dir.path(), &["keygen", "--out", "k.txt"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let recipient = String::from_utf8(first.stdout.clone()).expect("utf8");
    let ids = Identities::load(&dir.path().join("k.txt")).expect("load");
    assert_eq!(recipient, format!("{}\n", ids.recipients()[0]));
    let hint = stderr(&first);
    assert!(hint.contains("keep it secret"), "{hint}");
    assert!(
        hint.contains("Give the provider only the public key"),
        "{hint}"
    );

    let before = std::fs::read(dir.path().join("k.txt")).expect("read");
    let again = mishare(dir.path(), &["keygen", "--out", "k.txt"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stdout.is_empty());
    assert_eq!(
        stderr(&again),
        "error: k.txt already exists; a key is never overwritten (files encrypted to it \
         could not be opened again): choose another name or move the old file away\n"
    );
    assert_eq!(
        std::fs::read(dir.path().join("k.txt")).expect("read"),
        before
    );
}

#[test]
fn decrypt_out_writes_the_file_only_when_it_all_decrypts() {
    let (ours, theirs) = (La::new(), La::new());
    let plaintext = data(150 * 1024);
    let sealed = ours.seal(&plaintext);
    let dir = ours.dir.path();
    std::fs::write(dir.join("in.age"), &sealed).expect("w");
    std::fs::copy(&theirs.key, dir.join("other.key")).expect("copy");

    // A wrong key: status 1, the message, and no file at all.
    let before = listing(dir);
    let out = decrypt_to_out_csv(dir, "in.age", "other.key");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: cannot decrypt in.age: none of the identities in other.key can open this \
         file; is it for another LA?\n"
    );
    assert_eq!(listing(dir), before, "nothing may be left behind");

    // Damage in the last chunk: the first chunks decrypt, but still no file.
    let mut damaged = sealed.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(dir.join("damaged.age"), &damaged).expect("w");
    let before = listing(dir);
    let out = decrypt_to_out_csv(dir, "damaged.age", "key.txt");
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .starts_with("error: cannot decrypt damaged.age: the encrypted file is damaged"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listing(dir), before, "nothing may be left behind");

    // Not an age file at all.
    std::fs::write(dir.join("plain.csv"), b"a,b\n1,2\n").expect("w");
    let out = decrypt_to_out_csv(dir, "plain.csv", "key.txt");
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not an age v1 encrypted file"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("out.csv").exists());

    // The right key: the file, whole.
    let out = decrypt_to_out_csv(dir, "in.age", "key.txt");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(std::fs::read(dir.join("out.csv")).expect("read") == plaintext);
}

#[test]
fn decrypt_to_stdout_and_its_errors() {
    let la = La::new();
    let dir = la.dir.path();
    std::fs::write(dir.join("in.age"), la.seal(b"a,b\n1,2\n")).expect("w");
    let out = mishare(dir, &["decrypt", "in.age", "--identity", "key.txt"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"a,b\n1,2\n");

    let out = mishare(dir, &["decrypt", "in.age", "--identity", "nokey.txt"]);
    assert_eq!(out.status.code(), Some(66));
    assert!(
        stderr(&out).starts_with("error: cannot read the identity file nokey.txt: "),
        "{}",
        stderr(&out)
    );

    let out = mishare(dir, &["decrypt", "none.age", "--identity", "key.txt"]);
    assert_eq!(out.status.code(), Some(66));
    assert!(
        stderr(&out).starts_with("error: cannot open none.age: "),
        "{}",
        stderr(&out)
    );
}
