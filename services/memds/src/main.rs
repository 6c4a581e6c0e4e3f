//! `tern-memds`: configuration → telemetry → [`tern_memds::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tern_telemetry::exit_code(serve().await)
}

async fn serve() -> anyhow::Result<()> {
    let file = tern_config::config_file_from_args();
    let config: tern_memds::Config = tern_config::load("memds", file.as_deref())?;
    let _telemetry = tern_telemetry::init("tern-memds");
    tern_memds::run(config, tern_telemetry::shutdown_signal()).await
}
