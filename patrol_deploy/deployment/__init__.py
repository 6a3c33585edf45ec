"""From a trained PyTorch model to the edge that ships: export to ONNX (`export`), INT8 / FP16 quantization with
ModelOpt (`quantize`, `qat`), the calibration recipe (`calibration`), and the torch adapters that let the attacks
and the gate query an exported edge or a TensorRT engine (`onnx_runner`). The runtimes themselves are the
torch-free `backends/`; the on-device commands are `engine/`."""
