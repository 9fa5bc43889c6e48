//! carga's entry point: parse the command line and hand over to `cli`.

fn main() -> std::process::ExitCode {
    carga::cli::main()
}
