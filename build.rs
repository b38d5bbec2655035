//! Generates the gRPC code of `vidflow serve` from `proto/vidflow/serve/v1/serve.proto`
//! (server and client: the CLI tests drive the server with the generated client), plus the
//! file descriptor set that server reflection answers with. `protoc` comes from the
//! `protoc-bin-vendored` crate, so the build needs no system package and downloads nothing.

fn main() {
    let proto = "proto/vidflow/serve/v1/serve.proto";
    println!("cargo:rerun-if-changed={proto}");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored has protoc");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("serve_descriptor.bin"))
        .compile_with_config(config, &[proto], &["proto"])
        .expect("compile proto/vidflow/serve/v1/serve.proto");
}
