//! Compiles proto/csi.proto with protox (pure Rust), so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let descriptors = protox::compile(["csi.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Written by hand so that a server may send a page's entries in wire form.
        .extern_path(
            ".csi.v1.ListVolumesResponse",
            "crate::list_volumes::ListVolumesResponse",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
