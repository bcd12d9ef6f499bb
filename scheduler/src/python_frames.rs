//! Payload frames as Python objects, for the two sides that host Python (the
//! worker and the native module).

use crate::{large_frames, shared_memory};
use bytes::Bytes;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::os::raw::{c_int, c_void};

/// A received frame lent to Python without a copy. Pickle-protocol-5 buffers
/// (numpy arrays) are rebuilt on top of it. It is writable because the bytes of
/// a received message belong to this frame alone, as they would to an array
/// unpickled by ProcessPoolExecutor.
#[pyclass(frozen, module = "pmp._pmp")]
pub struct Frame {
    data: Bytes,
}

#[pymethods]
impl Frame {
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("null view"));
        }
        let data = &slf.get().data;
        // SAFETY: `view` is a valid Py_buffer supplied by CPython; the pointer
        // stays valid while `slf`, which FillInfo takes a reference to, lives.
        let status = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr() as *mut c_void,
                data.len() as ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if status == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.data.len()
    }
}

/// Frames of a payload as a Python list: the pickle as `bytes`, each
/// out-of-band buffer as a zero-copy `Frame` (or, with `copy_buffers`, a
/// `bytearray` the caller owns outright).
pub fn frames_to_python<'py>(
    py: Python<'py>,
    frames: &[Bytes],
    copy_buffers: bool,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (i, frame) in frames.iter().enumerate() {
        if i == 0 {
            list.append(PyBytes::new(py, frame))?;
        } else if copy_buffers {
            list.append(pyo3::types::PyByteArray::new(py, frame))?;
        } else {
            list.append(Bound::new(
                py,
                Frame {
                    data: frame.clone(),
                },
            )?)?;
        }
    }
    Ok(list)
}

/// Frames from a Python list of bytes-like objects (a pickle and its
/// `PickleBuffer`s). Copied: the caller may change its arrays after submit,
/// and a frame must not change between signing and sending.
pub fn frames_from_python(items: &Bound<'_, PyAny>) -> PyResult<Vec<Bytes>> {
    collect_frames(items, false)
}

/// `frames_from_python` whose large buffers are copied into shared memory
/// where it is on (`shared_memory`): a call's arguments, a task's result. A
/// process on this host then maps them instead of receiving them.
pub fn sharable_frames_from_python(items: &Bound<'_, PyAny>) -> PyResult<Vec<Bytes>> {
    collect_frames(items, true)
}

fn collect_frames(items: &Bound<'_, PyAny>, shared: bool) -> PyResult<Vec<Bytes>> {
    let mut frames = Vec::new();
    for item in items.try_iter()? {
        let item = item?;
        if let Ok(bytes) = item.cast::<PyBytes>() {
            frames.push(Bytes::copy_from_slice(bytes.as_bytes()));
            continue;
        }
        let buffer = PyBuffer::<u8>::get(&item)?;
        let len = buffer.item_count();
        if shared && len >= shared_memory::SHARED_FROM && buffer.is_c_contiguous() {
            let source = buffer.buf_ptr() as usize;
            // The exported buffer stays valid while `buffer` lives, so the
            // copy (or the comparison with an equal one) can let other
            // Python threads run.
            let copied = item.py().detach(|| {
                // SAFETY: `source` is a contiguous buffer of `len` bytes
                // kept exported by `buffer` (a Python thread that writes
                // the array meanwhile races with this submit, as it would
                // with the copy).
                let source = unsafe { std::slice::from_raw_parts(source as *const u8, len) };
                shared_memory::frame_of(source)
            });
            if let Some(frame) = copied {
                frames.push(frame);
                continue;
            }
        }
        let mut data = large_frames::storage(len);
        if buffer.is_c_contiguous() {
            // The exported buffer stays valid while `buffer` lives, so the
            // copy (15 ms for 100 MB) can let other Python threads run.
            let source = buffer.buf_ptr() as usize;
            let target = data.as_mut_ptr() as usize;
            let copy = move || {
                // SAFETY: `source` is a contiguous buffer of `len` bytes kept
                // exported by `buffer`; `data` has capacity for `len` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(source as *const u8, target as *mut u8, len);
                }
            };
            if len >= 1 << 20 {
                item.py().detach(copy);
            } else {
                copy();
            }
            // SAFETY: all `len` bytes were just written.
            unsafe { data.set_len(len) };
        } else {
            data.resize(len, 0);
            buffer.copy_to_slice(item.py(), &mut data)?;
        }
        frames.push(large_frames::into_frame(data));
    }
    Ok(frames)
}
