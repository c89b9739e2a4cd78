//! The `lifeboat` binary: all logic lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    lifeboat::cli::main()
}
