//! Opening a model the two ways the tests compare: every weight read now (a checkpoint, or a
//! converted directory with its experts decoded to f32), or a converted directory's experts
//! fetched from its files when the router first picks them.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use switchscope_core::config::SwitchConfig;
use switchscope_core::runtime::store::{ExpertStore, StoreOptions};
use switchscope_core::tensor::Device;
use switchscope_core::{CoreError, OpenOptions, Switch};

/// Every weight of `dir` read now.
pub fn open_eager(dir: &Path, device: &Device) -> Result<(SwitchConfig, Switch), CoreError> {
    let options = OpenOptions {
        eager: true,
        ..OpenOptions::default()
    };
    let switch = pollster::block_on(Switch::open(dir, device, options))?;
    Ok((switch.config().clone(), switch))
}

/// A converted `dir` with its experts on demand, kept as `store` says.
pub fn open_lazy(
    dir: &Path,
    device: &Device,
    store: StoreOptions,
) -> Result<(SwitchConfig, Switch, Arc<ExpertStore>), CoreError> {
    let options = OpenOptions {
        store,
        ..OpenOptions::default()
    };
    let switch = pollster::block_on(Switch::open(dir, device, options))?;
    let store = switch
        .store()
        .cloned()
        .expect("a converted model has a store");
    Ok((switch.config().clone(), switch, store))
}
