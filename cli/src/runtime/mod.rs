//! What the commands share at run time: devices, ranks and their launcher, progress bars, seed
//! lists, the allocator setting, outputs checked against inputs, the model options.

pub(crate) mod allocator;
pub(crate) mod bounds;
pub(crate) mod device;
pub(crate) mod launch;
pub(crate) mod model_args;
pub(crate) mod outputs;
pub(crate) mod progress;
pub(crate) mod seeds;
