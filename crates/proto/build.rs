//! Compiles `proto/` into `OUT_DIR` with a vendored `protoc`, plus the
//! file-descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary may be reused for another checkout.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // SAFETY of the build: build scripts are single-threaded, and prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let product = [
        "baton/v1/types.proto",
        "baton/v1/handoff.proto",
        "baton/v1/health.proto",
        "baton/v1/admin.proto",
    ];
    // The bench echo gets its own descriptor set so reflection on the
    // router lists only the product's services.
    let sets = [
        (&product[..], "baton_descriptor.bin"),
        (&["baton/bench/v1/echo.proto"][..], "bench_descriptor.bin"),
    ];
    for (files, descriptor) in sets {
        let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
        tonic_prost_build::configure()
            // Undecodable requests are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
            .codec_path("crate::codec::Codec")
            .file_descriptor_set_path(out.join(descriptor))
            .compile_protos(&paths, std::slice::from_ref(&root))?;
    }
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
