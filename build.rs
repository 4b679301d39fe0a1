//! Compiles the wire contract (`proto/mishare/v1/exchange.proto`) with a
//! pure-Rust protobuf compiler (protox), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["mishare/v1/exchange.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // Chunk payloads are handed on without copying.
        .bytes(".mishare.v1.Chunk.data")
        .compile_fds(descriptors)?;
    Ok(())
}
