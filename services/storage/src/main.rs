//! `tern-storage`: configuration → telemetry → [`tern_storage::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tern_telemetry::exit_code(serve().await)
}

async fn serve() -> anyhow::Result<()> {
    let file = tern_config::config_file_from_args();
    let config: tern_storage::Config = tern_config::load("storage", file.as_deref())?;
    let _telemetry = tern_telemetry::init("tern-storage");
    tern_storage::run(config, tern_telemetry::shutdown_signal()).await
}
