// The compute worker's entry point (a classic worker script, so no inline code is needed and
// the page's Content-Security-Policy stays strict).
//
// Before the wasm starts it wraps GPUAdapter.requestDevice, so that every WebGPU device this
// worker creates reports its loss: when `device.lost` resolves (a driver reset, a GPU process
// crash, the tab in the background too long, or `device.destroy()`), the page is told with a
// `device_lost` message and replaces this worker with one that computes on the CPU.
// `self.switchscopeGpuDevice` is the device in use (the end-to-end tests destroy it).
if (self.GPUAdapter && GPUAdapter.prototype.requestDevice) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await requestDevice.apply(this, args);
    self.switchscopeGpuDevice = device;
    device.lost.then((info) => {
      self.postMessage(
        JSON.stringify({ body: { type: 'device_lost', reason: String(info.reason ?? 'unknown'), message: String(info.message ?? '') } }),
      );
    });
    return device;
  };
}
importScripts('./worker.js');
wasm_bindgen('./worker_bg.wasm');
