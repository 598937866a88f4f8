//! Turning one decoded source image into patches: where to cut them
//! ([`tiling`]), which to keep ([`tissue`]), how to vary them ([`augment`], its rotation and zoom in `warp`) and
//! how to even out stain colour between labs ([`stain`]).

pub mod augment;
pub mod stain;
pub mod tiling;
pub mod tissue;
mod warp;
