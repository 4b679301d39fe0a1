//! One provider's side of `Exchange`, for tests that drive an endpoint by
//! hand: an age file, the messages of a push, and owner-only key files.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::Path;

use mishare::wire::v1::exchange_client::ExchangeClient;
use mishare::wire::v1::push_request::Body;
use mishare::wire::v1::{Chunk, Classification, Commit, Manifest, PushRequest, Receipt};
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::transport::Channel;

/// The LA the endpoint serves.
pub const CODE: &str = "E09000002";
/// The name its certificate is issued for.
pub const SERVER_NAME: &str = "la-e09000002.test";
/// The size of the chunks a push sends.
pub const CHUNK: usize = 4096;

/// An age file of about `plaintext_len` bytes.
pub fn age_file(plaintext_len: usize) -> Vec<u8> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .expect("encryptor");
    let plaintext: Vec<u8> = (0..plaintext_len).map(|i| (i * 31 % 251) as u8).collect();
    let mut out = Vec::new();
    let mut writer = encryptor.wrap_output(&mut out).expect("wrap");
    writer.write_all(&plaintext).expect("write");
    writer.finish().expect("finish");
    out
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// The manifest of `file` as transfer `id`, resuming at `offset`.
pub fn manifest(id: &str, file: &[u8], offset: u64) -> Manifest {
    Manifest {
        transfer_id: id.into(),
        report: "referrals-monthly".into(),
        period: "2012-10".into(),
        classification: Classification::Internal as i32,
        la_code: CODE.into(),
        size: file.len() as u64,
        sha256: sha256(file),
        offset,
    }
}

pub fn m(manifest: Manifest) -> PushRequest {
    PushRequest {
        body: Some(Body::Manifest(manifest)),
    }
}

pub fn chunk(offset: u64, data: &[u8]) -> PushRequest {
    PushRequest {
        body: Some(Body::Chunk(Chunk {
            offset,
            data: data.to_vec().into(),
        })),
    }
}

pub fn commit() -> PushRequest {
    PushRequest {
        body: Some(Body::Commit(Commit {})),
    }
}

/// Chunks of `file` from `from`, each at most CHUNK bytes.
pub fn chunks(file: &[u8], from: usize) -> Vec<PushRequest> {
    file[from..]
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, data)| chunk((from + i * CHUNK) as u64, data))
        .collect()
}

/// A whole push: manifest at `from`, the chunks from there, commit.
pub fn whole(id: &str, file: &[u8], from: usize) -> Vec<PushRequest> {
    let mut msgs = vec![m(manifest(id, file, from as u64))];
    msgs.extend(chunks(file, from));
    msgs.push(commit());
    msgs
}

pub async fn push(
    client: &mut ExchangeClient<Channel>,
    msgs: Vec<PushRequest>,
) -> Result<Receipt, Status> {
    client
        .push(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// Writes a private key owner-only (0600), as the endpoint demands.
pub fn write_private_key(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, pem).expect("key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}
