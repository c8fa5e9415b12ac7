//! The page: mounts the Leptos app. All computation happens in the worker (`src/bin/worker.rs`).

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(switchscope_web::app::App);
}
