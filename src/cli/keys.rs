//! `mishare keygen` and `mishare decrypt`: the LA's side of the age
//! encryption (the library's `seal` module does the work).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use mishare::seal::{self, Identities, SealError};
use zeroize::Zeroizing;

use super::{Outcome, fail, status};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Give the provider only the public key printed on standard output \
                        (age1…). Keep FILE secret and backed up: without it the LA's files \
                        cannot be opened. Exit status: 0 on success, 1 if FILE exists (it is \
                        never overwritten) or cannot be written."
)]
pub(crate) struct KeygenArgs {
    /// Where to write the new identity (the secret key). Must not exist.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The standard tool opens the same files: age -d -i KEY FILE. \
                        Exit status: 0 on success, 1 when the key does not open the file or \
                        the output cannot be written, 65 when the file is not age or is \
                        damaged, 66 when FILE or KEY cannot be read. With --out nothing is \
                        written unless the whole file decrypts."
)]
pub(crate) struct DecryptArgs {
    /// The delivered file (`….age`).
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// The LA's age identity file (made by `mishare keygen` or `age-keygen`).
    #[arg(long, value_name = "KEY")]
    identity: PathBuf,

    /// Write the plaintext here instead of standard output. The file appears
    /// only once the whole input has decrypted and been authenticated
    /// (owner-only permissions; an existing file is replaced).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

pub(crate) fn keygen(args: &KeygenArgs) -> Outcome {
    let recipient = match seal::generate(&args.out) {
        Ok(r) => r,
        Err(e) => return Ok(fail(status::FAILURE, &e.into())),
    };
    eprintln!(
        "wrote a new age identity to {}: keep it secret and backed up.\n\
         Give the provider only the public key below (age1…), for this LA's `recipients`.",
        args.out.display()
    );
    super::write_stdout(format!("{recipient}\n").as_bytes())
}

pub(crate) fn decrypt(args: &DecryptArgs) -> Outcome {
    let identities = match Identities::load(&args.identity) {
        Ok(ids) => ids,
        Err(e) => return Ok(fail(status::NO_INPUT, &e.into())),
    };
    let input = match File::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("cannot open {}", args.file.display()));
            return Ok(fail(status::NO_INPUT, &e));
        }
    };
    let plaintext = match seal::open(input, &identities) {
        Ok(p) => p,
        Err(e) => {
            let code = open_status(&e);
            let e =
                anyhow::Error::new(e).context(format!("cannot decrypt {}", args.file.display()));
            return Ok(fail(code, &e));
        }
    };
    match &args.out {
        Some(out) => decrypt_to_file(plaintext, &args.file, out),
        None => decrypt_to_stdout(plaintext, &args.file),
    }
}

fn open_status(e: &SealError) -> u8 {
    match e {
        SealError::WrongIdentity { .. } => status::FAILURE,
        SealError::ReadCiphertext(_) => status::NO_INPUT,
        _ => status::DATA_ERR,
    }
}

/// Decrypts into a temporary file beside `out` and renames it into place only
/// when the whole input has been authenticated: never a partial plaintext.
fn decrypt_to_file(plaintext: impl Read, file: &Path, out: &Path) -> Outcome {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let cannot_write = |e: io::Error| {
        let e = anyhow::Error::new(e).context(format!("cannot write {}", out.display()));
        Ok(fail(status::FAILURE, &e))
    };
    // Created with owner-only permissions; removed on drop if not persisted.
    let temp = match tempfile::Builder::new()
        .prefix(".mishare-decrypt-")
        .suffix(".tmp")
        .tempfile_in(dir)
    {
        Ok(t) => t,
        Err(e) => return cannot_write(e),
    };
    let mut writer = io::BufWriter::new(temp.as_file());
    match pump(plaintext, &mut writer) {
        Ok(()) => {}
        Err(Pump::Read(e)) => return Ok(read_failure(file, &e)),
        Err(Pump::Write(e)) => return cannot_write(e),
    }
    if let Err(e) = writer.flush().and_then(|()| temp.as_file().sync_all()) {
        return cannot_write(e);
    }
    drop(writer);
    if let Err(e) = temp.persist(out) {
        return cannot_write(e.error);
    }
    // Make the rename itself durable; the plaintext is already complete.
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(0)
}

fn decrypt_to_stdout(plaintext: impl Read, file: &Path) -> Outcome {
    let mut stdout = io::stdout().lock();
    match pump(plaintext, &mut stdout).and_then(|()| stdout.flush().map_err(Pump::Write)) {
        Ok(()) => Ok(0),
        Err(Pump::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        Err(Pump::Write(e)) => {
            Err(anyhow::Error::new(e).context("cannot write to standard output"))
        }
        Err(Pump::Read(e)) => {
            let code = read_failure(file, &e);
            eprintln!(
                "error: some output may already have been written: discard it all (use --out \
                 to get a file only when decryption succeeds)"
            );
            Ok(code)
        }
    }
}

/// Reports an error met while decrypting the payload and gives its status.
fn read_failure(file: &Path, e: &io::Error) -> u8 {
    match SealError::from_io(e) {
        Some(damaged) => {
            eprintln!("error: cannot decrypt {}: {damaged}", file.display());
            status::DATA_ERR
        }
        None => {
            eprintln!("error: cannot read {}: {e}", file.display());
            status::NO_INPUT
        }
    }
}

enum Pump {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` to `to` through one buffer, zeroed afterwards (it held
/// plaintext), telling read errors from write errors.
fn pump(mut from: impl Read, to: &mut impl Write) -> Result<(), Pump> {
    let mut buf = Zeroizing::new(vec![0u8; 64 * 1024]);
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Pump::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Pump::Write)?;
    }
}
