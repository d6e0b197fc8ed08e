//! Named-tensor I/O between burn modules and safetensors files: a module's float parameters are
//! addressed by their path (`layers.0.self_attn.q_proj.weight`), read from and written to
//! safetensors in f32 / f16 / bf16, single or sharded with an index.
//!
//! burn's `Linear` stores `[in, out]` where PyTorch stores `[out, in]`: those weights are
//! transposed on the way in and out, so files hold PyTorch's layout. Values are f32 in memory
//! whatever the stored dtype.

use super::ModelError;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Storage precision of saved tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

/// `model.safetensors.index.json`.
#[derive(Serialize, Deserialize)]
struct ShardIndex {
    #[serde(default)]
    metadata: serde_json::Value,
    weight_map: BTreeMap<String, String>,
}

/// The safetensors files of `{stem}` in `dir`: the shards of `{stem}.safetensors.index.json`,
/// else `{stem}.safetensors`.
pub fn checkpoint_files(dir: &Path, stem: &str) -> Result<Vec<PathBuf>, ModelError> {
    let index_path = dir.join(format!("{stem}.safetensors.index.json"));
    if index_path.exists() {
        let text = std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
        let index: ShardIndex = serde_json::from_str(&text).map_err(|e| ModelError::json(&index_path, e))?;
        let shards: std::collections::BTreeSet<&String> = index.weight_map.values().collect();
        return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
    }
    let single = dir.join(format!("{stem}.safetensors"));
    if !single.exists() {
        return Err(ModelError::io(
            &single,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no checkpoint (nor an index)"),
        ));
    }
    Ok(vec![single])
}

/// A tensor as (module path, checkpoint shape, f32 values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Loads the module's float parameters from `files`; `to_path` maps a stored key to a module
/// path and whether the module uses it, or says why the key is not understood. Every parameter
/// must be found; the unused tensors are returned.
pub fn load_params<M: Module>(
    module: M,
    dir: &Path,
    files: &[PathBuf],
    to_path: impl Fn(&str) -> Result<(String, bool), String>,
) -> Result<(M, Vec<NamedTensor>), ModelError> {
    let mut module = module;
    let mut unused = Vec::new();
    let mut loaded = HashSet::new();
    for file in files {
        let handle = std::fs::File::open(file).map_err(|e| ModelError::io(file, e))?;
        // SAFETY: the file is only read, and a checkpoint is not expected to change while loading.
        let bytes = unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| ModelError::io(file, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::Safetensors { path: file.clone(), problem: e.to_string() })?;
        let mut loader = Loader {
            stack: Vec::new(),
            tensors: HashMap::new(),
            loaded: HashSet::new(),
            error: None,
            file: file.clone(),
        };
        for (key, view) in st.tensors() {
            let tensor_error =
                |problem: String| ModelError::Tensor { path: file.clone(), tensor: key.clone(), problem };
            match to_path(&key) {
                Err(problem) => return Err(tensor_error(problem)),
                Ok((path, false)) => {
                    unused.push((path, view.shape().to_vec(), to_f32(&view).map_err(tensor_error)?))
                }
                Ok((path, true)) if loaded.contains(&path) || loader.tensors.contains_key(&path) => {
                    return Err(tensor_error(format!("a second tensor for `{path}`")));
                }
                Ok((path, true)) => {
                    loader.tensors.insert(path, (key, view));
                }
            }
        }
        module = module.map(&mut loader);
        if let Some(error) = loader.error.take() {
            return Err(error);
        }
        if let Some((path, (key, _))) = loader.tensors.iter().next() {
            return Err(ModelError::Tensor {
                path: file.clone(),
                tensor: key.clone(),
                problem: format!("the model has no parameter `{path}`"),
            });
        }
        loaded.extend(loader.loaded);
    }
    let expected = collect_paths(&module);
    if let Some(missing) = expected.iter().find(|p| !loaded.contains(*p)) {
        return Err(ModelError::Tensor {
            path: dir.to_path_buf(),
            tensor: missing.clone(),
            problem: "missing from the checkpoint".into(),
        });
    }
    Ok((module, unused))
}

/// Module paths of the float parameters (adapter factors excluded), without reading values.
fn collect_paths<M: Module>(module: &M) -> Vec<String> {
    let mut collector = Collector { stack: Vec::new(), values: false, out: Vec::new(), error: None };
    module.visit(&mut collector);
    collector.out.into_iter().map(|(path, _, _)| path).collect()
}

/// Path, checkpoint shape and f32 values of every float parameter. A LoRA-adapted weight gives
/// its base (burn's visitors see the base), so merge adapters first to save effective weights.
pub fn collect_params<M: Module>(module: &M) -> Result<Vec<NamedTensor>, ModelError> {
    let mut collector = Collector { stack: Vec::new(), values: true, out: Vec::new(), error: None };
    module.visit(&mut collector);
    match collector.error {
        Some(error) => Err(error),
        None => Ok(collector.out),
    }
}

/// Stack of (field, parent type) during a module traversal.
type Stack = Vec<(String, String)>;

fn path_of(stack: &Stack) -> String {
    stack.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(".")
}

/// Linear weights are stored transposed relative to PyTorch.
fn is_linear_weight(stack: &Stack) -> bool {
    stack.last().is_some_and(|(name, parent)| name == "weight" && parent == "Struct:Linear")
}

/// Inside a reparameterisation (LoRA factors): not part of the checkpoint layout.
fn in_adapter(stack: &Stack) -> bool {
    stack.iter().any(|(_, parent)| parent == "Reparameterization")
}

struct Loader<'a> {
    stack: Stack,
    tensors: HashMap<String, (String, TensorView<'a>)>,
    loaded: HashSet<String>,
    error: Option<ModelError>,
    file: PathBuf,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = path_of(&self.stack);
        if self.error.is_some() || in_adapter(&self.stack) {
            return param;
        }
        let Some((key, view)) = self.tensors.remove(&path) else {
            return param;
        };
        let mut expected = param.lazy_shape().dims::<D>().to_vec();
        let transpose = is_linear_weight(&self.stack);
        if transpose {
            expected.reverse();
        }
        let fail =
            |problem: String| ModelError::Tensor { path: self.file.clone(), tensor: key.clone(), problem };
        if view.shape() != expected.as_slice() {
            self.error = Some(fail(format!("shape {:?}, the model expects {expected:?}", view.shape())));
            return param;
        }
        let values = match to_f32(&view) {
            Ok(values) => values,
            Err(problem) => {
                self.error = Some(fail(problem));
                return param;
            }
        };
        // A NaN or infinite weight only ever yields nonsense (token 0 forever, NaN log-probs).
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            self.error = Some(fail(format!("value {} at flat index {i} is not finite", values[i])));
            return param;
        }
        let device: Device = param.lazy_device();
        let mut tensor = Tensor::<D>::from_data(TensorData::new(values, expected), &device);
        if transpose {
            tensor = tensor.transpose();
        }
        self.loaded.insert(path);
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

struct Collector {
    stack: Stack,
    values: bool,
    out: Vec<NamedTensor>,
    error: Option<ModelError>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if in_adapter(&self.stack) {
            return;
        }
        if !self.values {
            self.out.push((path_of(&self.stack), Vec::new(), Vec::new()));
            return;
        }
        let mut tensor = param.val();
        if is_linear_weight(&self.stack) {
            tensor = tensor.transpose();
        }
        let shape = tensor.dims().to_vec();
        let path = path_of(&self.stack);
        match tensor.into_data().try_into_vec_as::<f32>() {
            Ok(values) => self.out.push((path, shape, values)),
            Err(e) => self.error = Some(ModelError::Input(format!("reading parameter `{path}`: {e:?}"))),
        }
    }
}

/// Decodes a stored tensor to f32.
fn to_f32(view: &TensorView) -> Result<Vec<f32>, String> {
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => {
            data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        other => {
            return Err(format!("dtype {other:?} is not a float type factrl reads (f32, f16, bf16)"));
        }
    })
}

/// Encodes f32 values for storage.
fn encode(values: &[f32], dtype: SaveDtype) -> Vec<u8> {
    match dtype {
        SaveDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        SaveDtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        SaveDtype::Bf16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
    }
}

/// Writes named tensors as `{stem}.safetensors`, or as `{stem}-0000i-of-0000n.safetensors`
/// shards plus `{stem}.safetensors.index.json` when they exceed `max_shard_bytes`.
pub fn save_tensors(
    tensors: Vec<NamedTensor>,
    dir: &Path,
    stem: &str,
    dtype: SaveDtype,
    max_shard_bytes: usize,
) -> Result<(), ModelError> {
    let st_dtype = match dtype {
        SaveDtype::F32 => Dtype::F32,
        SaveDtype::F16 => Dtype::F16,
        SaveDtype::Bf16 => Dtype::BF16,
    };
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.into_iter().map(|(k, s, v)| (k, s, encode(&v, dtype))).collect();
    // Greedy shards in key order; a tensor larger than the limit gets a shard of its own.
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0;
    for (i, (_, _, bytes)) in encoded.iter().enumerate() {
        if size > 0 && size + bytes.len() > max_shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += bytes.len();
        if let Some(shard) = shards.last_mut() {
            shard.push(i);
        }
    }
    let n = shards.len();
    remove_stale(dir, stem)?;
    let name = |i: usize| {
        if n == 1 {
            format!("{stem}.safetensors")
        } else {
            format!("{stem}-{:05}-of-{n:05}.safetensors", i + 1)
        }
    };
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let path = dir.join(name(i));
        let mut views = Vec::new();
        for &t in shard {
            let (key, shape, bytes) = &encoded[t];
            let view = TensorView::new(st_dtype, shape.clone(), bytes).map_err(|e| ModelError::Tensor {
                path: path.clone(),
                tensor: key.clone(),
                problem: e.to_string(),
            })?;
            views.push((key.clone(), view));
            weight_map.insert(key.clone(), name(i));
        }
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(metadata), &path)
            .map_err(|e| ModelError::Safetensors { path: path.clone(), problem: e.to_string() })?;
    }
    if n > 1 {
        let total: usize = encoded.iter().map(|(_, _, b)| b.len()).sum();
        let index = ShardIndex { metadata: serde_json::json!({ "total_size": total }), weight_map };
        let path = dir.join(format!("{stem}.safetensors.index.json"));
        let json = serde_json::to_string_pretty(&index).map_err(|e| ModelError::json(&path, e))?;
        std::fs::write(&path, json).map_err(|e| ModelError::io(&path, e))?;
    }
    Ok(())
}

/// Removes an earlier save of `stem` (single file, shards, index): transformers would read a
/// stale `{stem}.safetensors` before new shards.
fn remove_stale(dir: &Path, stem: &str) -> Result<(), ModelError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| ModelError::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let shard = name
            .strip_prefix(&format!("{stem}-"))
            .is_some_and(|r| r.contains("-of-") && r.ends_with(".safetensors"));
        if shard || name == format!("{stem}.safetensors") || name == format!("{stem}.safetensors.index.json")
        {
            std::fs::remove_file(&path).map_err(|e| ModelError::io(&path, e))?;
        }
    }
    Ok(())
}
