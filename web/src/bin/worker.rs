//! The compute worker: answers the page's requests (see `switchscope_web::protocol`).

fn main() {
    console_error_panic_hook::set_once();
    switchscope_web::worker::start();
}
