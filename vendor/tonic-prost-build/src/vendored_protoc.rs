//! tideway's addition to tonic-prost-build 0.14.9: a protoc that needs no install. Before
//! `configure` builds anything, `PROTOC` (and `PROTOC_INCLUDE`, for `google/protobuf/*.proto`)
//! point at protoc-bin-vendored's copy, unless `PROTOC` is already set or `protoc` is on `PATH`.
//! A build script is a single-threaded process, so setting the environment here is sound.

pub(crate) fn use_if_needed() {
    if std::env::var_os("PROTOC").is_some() || protoc_on_path() {
        return;
    }
    if let (Ok(bin), Ok(include)) = (
        protoc_bin_vendored::protoc_bin_path(),
        protoc_bin_vendored::include_path(),
    ) {
        // SAFETY: build scripts run on one thread; nothing reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", bin) };
        if std::env::var_os("PROTOC_INCLUDE").is_none() {
            unsafe { std::env::set_var("PROTOC_INCLUDE", include) };
        }
    }
}

fn protoc_on_path() -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("protoc").is_file()))
        .unwrap_or(false)
}
