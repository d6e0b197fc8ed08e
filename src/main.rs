//! The `factrl` command: a thin layer over the library.

fn main() -> std::process::ExitCode {
    factrl::cli::main()
}
