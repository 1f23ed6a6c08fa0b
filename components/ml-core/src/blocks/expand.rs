//! The fp32 reference: every block-quantised product expanded to a plain
//! `MatMul` on the values its blocks stand for, before tract sees the graph.
//! Tests compare the kernels against it ([`super::Blocks::Expand`]).
//!
//! A Q8_0 matrix is stored as two 4-bit planes whose products are summed
//! (`Add(MatMulNBits(x, hi), MatMulNBits(x, lo))`); such a pair becomes one
//! `MatMul` on the sum of the two planes, which is exact: each plane's values
//! are a half-precision scale times a small integer, so their sum fits f32.

use anyhow::{ensure, Context, Result};
use std::collections::{HashMap, HashSet};
use tract_onnx::pb::{tensor_proto::DataType, GraphProto, ModelProto, NodeProto, TensorProto};

use super::{nbits_shape, BLOCK};

/// Replaces every `MatMulNBits` (4 bits, blocks of 32, default zero point 8)
/// by a `MatMul` on an fp32 `[K, N]` initializer. Returns how many matrices
/// it expanded. Anything else it cannot expand exactly is an error naming
/// the node, never a silently different graph.
pub fn expand(model: &mut ModelProto) -> Result<usize> {
    let graph = model.graph.as_mut().context("model.onnx has no graph")?;
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type == "MatMulNBits")
        .map(|(i, n)| (n.output[0].as_str(), i))
        .collect();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for input in graph.node.iter().flat_map(|n| &n.input) {
        *uses.entry(input.as_str()).or_default() += 1;
    }
    // Groups of MatMulNBits nodes that become one MatMul, with the name of
    // the value that MatMul produces: a summed pair, or a node on its own.
    let mut groups: Vec<(Vec<usize>, String, Option<usize>)> = Vec::new();
    let mut grouped = HashSet::new();
    for (i, node) in graph.node.iter().enumerate() {
        if node.op_type != "Add" || node.input.len() != 2 {
            continue;
        }
        let pair = [node.input[0].as_str(), node.input[1].as_str()].map(|v| producer.get(v));
        if let [Some(&a), Some(&b)] = pair {
            let same_input = graph.node[a].input.first() == graph.node[b].input.first();
            let only_here = node.input.iter().all(|v| uses[v.as_str()] == 1);
            if a != b && same_input && only_here {
                groups.push((vec![a, b], node.output[0].clone(), Some(i)));
                grouped.extend([a, b]);
            }
        }
    }
    for &i in producer.values() {
        if !grouped.contains(&i) {
            groups.push((vec![i], graph.node[i].output[0].clone(), None));
        }
    }

    let mut removed = HashSet::new();
    let mut replaced = HashMap::new();
    let mut new_inits = Vec::new();
    for (members, output, add) in &groups {
        let mut weight: Option<(usize, usize, Vec<f32>)> = None;
        for &m in members {
            let (k, n, w) = dequantize(graph, &graph.node[m])?;
            match &mut weight {
                None => weight = Some((k, n, w)),
                Some((k0, n0, sum)) => {
                    ensure!(
                        (*k0, *n0) == (k, n),
                        "summed MatMulNBits nodes [{}] have different shapes",
                        graph.node[m].name
                    );
                    sum.iter_mut().zip(w).for_each(|(s, v)| *s += v);
                }
            }
        }
        let (k, n, w) = weight.expect("a group has a member");
        let name = format!("{output}.weight_T");
        new_inits.push(f32_tensor(&name, &[k, n], &w));
        let first = &graph.node[members[0]];
        let matmul = NodeProto {
            input: vec![first.input[0].clone(), name],
            output: vec![output.clone()],
            name: output.clone(),
            op_type: "MatMul".into(),
            ..Default::default()
        };
        // The MatMul takes the first member's place (its input exists by
        // then); the other member and the Add go.
        replaced.insert(members[0], matmul);
        removed.extend(members[1..].iter().copied().chain(*add));
    }
    let count = groups.len();
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(i, node)| replaced.remove(&i).unwrap_or(node))
        .collect();
    // The codes and scales are read by nothing now: drop them, so the
    // expanded graph holds one copy of each weight.
    let read: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| &n.input)
        .map(String::as_str)
        .collect();
    let kept: Vec<TensorProto> = std::mem::take(&mut graph.initializer)
        .into_iter()
        .filter(|t| read.contains(t.name.as_str()))
        .collect();
    graph.initializer = kept;
    graph.initializer.extend(new_inits);
    Ok(count)
}

/// `(K, N, W^T)` of one MatMulNBits node: `W[n][k] = (code - 8) * scale`.
fn dequantize(graph: &GraphProto, node: &NodeProto) -> Result<(usize, usize, Vec<f32>)> {
    let what = || format!("MatMulNBits [{}]", node.name);
    let (k, n) = nbits_shape(node)?;
    let codes = initializer(graph, &node.input[1], DataType::Uint8)?;
    let scales = initializer(graph, &node.input[2], DataType::Float)?;
    let blocks = k / BLOCK;
    ensure!(
        codes.len() == n * k / 2 && scales.len() == 4 * n * blocks,
        "{}: weights of {} bytes and scales of {} bytes do not fit K {k}, N {n}",
        what(),
        codes.len(),
        scales.len()
    );
    let mut w = vec![0f32; k * n];
    for (row, (codes, scales)) in codes
        .chunks_exact(k / 2)
        .zip(scales.chunks_exact(4 * blocks))
        .enumerate()
    {
        for (b, (codes, scale)) in codes
            .chunks_exact(BLOCK / 2)
            .zip(scales.chunks_exact(4))
            .enumerate()
        {
            let scale = f32::from_le_bytes(scale.try_into().expect("4 bytes"));
            for (i, byte) in codes.iter().enumerate() {
                let col = b * BLOCK + 2 * i;
                w[col * n + row] = ((byte & 0x0F) as f32 - 8.0) * scale;
                w[(col + 1) * n + row] = ((byte >> 4) as f32 - 8.0) * scale;
            }
        }
    }
    Ok((k, n, w))
}

/// The raw little-endian bytes of the initializer `name`, of type `ty`.
fn initializer<'g>(graph: &'g GraphProto, name: &str, ty: DataType) -> Result<&'g [u8]> {
    let t = graph
        .initializer
        .iter()
        .find(|t| t.name == name)
        .with_context(|| format!("MatMulNBits input [{name}] is not an initializer"))?;
    ensure!(
        t.data_type == ty as i32 && !t.raw_data.is_empty(),
        "initializer [{name}] is not raw {ty:?} data"
    );
    Ok(&t.raw_data)
}

fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use tract_onnx::pb::AttributeProto;
    use tract_onnx::prelude::*;

    pub(in crate::blocks) fn nbits(name: &str, x: &str, n: usize, k: usize) -> NodeProto {
        let int = |name: &str, i: usize| AttributeProto {
            name: name.into(),
            i: i as i64,
            r#type: 2, // INT
            ..Default::default()
        };
        NodeProto {
            input: vec![x.into(), format!("{name}.codes"), format!("{name}.scales")],
            output: vec![name.into()],
            name: name.into(),
            op_type: "MatMulNBits".into(),
            domain: "com.microsoft".into(),
            attribute: vec![
                int("K", k),
                int("N", n),
                int("bits", 4),
                int("block_size", 32),
            ],
            ..Default::default()
        }
    }

    /// Codes and scales for an `[n, k]` matrix, and its fp32 values.
    pub(in crate::blocks) fn weights(
        name: &str,
        n: usize,
        k: usize,
        seed: u32,
    ) -> (Vec<TensorProto>, Vec<f32>) {
        let codes: Vec<u8> = (0..n * k / 2)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as u8)
            .collect();
        let scales: Vec<f32> = (0..n * k / 32).map(|i| 0.01 * (i as f32 + 1.0)).collect();
        let mut values = vec![0f32; n * k];
        for (i, v) in values.iter_mut().enumerate() {
            let byte = codes[i / 2];
            let code = if i % 2 == 0 { byte & 15 } else { byte >> 4 };
            *v = (code as f32 - 8.0) * scales[i / 32];
        }
        let tensors = vec![
            TensorProto {
                name: format!("{name}.codes"),
                dims: vec![n as i64, (k / 32) as i64, 16],
                data_type: DataType::Uint8 as i32,
                raw_data: codes,
                ..Default::default()
            },
            f32_tensor(&format!("{name}.scales"), &[n * k / 32], &scales),
        ];
        (tensors, values)
    }

    pub(in crate::blocks) fn model(
        nodes: Vec<NodeProto>,
        initializer: Vec<TensorProto>,
        outputs: &[&str],
    ) -> ModelProto {
        use tract_onnx::pb::{type_proto, TypeProto, ValueInfoProto};
        // f32 of any shape: the test sets the input's shape before running.
        let value = |name: &str| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![
                tract_onnx::pb::OperatorSetIdProto {
                    domain: String::new(),
                    version: 17,
                },
                tract_onnx::pb::OperatorSetIdProto {
                    domain: "com.microsoft".into(),
                    version: 1,
                },
            ],
            graph: Some(GraphProto {
                node: nodes,
                initializer,
                input: vec![value("x")],
                output: outputs.iter().map(|o| value(o)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Runs the graph on x `[2, k]` and returns its outputs.
    fn run(proto: &ModelProto, x: &[f32], k: usize) -> Vec<Vec<f32>> {
        let mut model = tract_onnx::onnx().model_for_proto_model(proto).unwrap();
        model.set_input_fact(0, f32::fact([2, k]).into()).unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let x = Tensor::from_shape(&[2, k], x).unwrap();
        plan.run(tvec!(x.into()))
            .unwrap()
            .iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .unwrap()
                    .iter()
                    .copied()
                    .collect()
            })
            .collect()
    }

    #[test]
    fn expands_one_matrix_and_merges_a_summed_pair() {
        let (n, k) = (3, 64);
        let (mut inits, w1) = weights("a", n, k, 1);
        let (more, w2) = weights("b", n, k, 7);
        inits.extend(more);
        let (more, w3) = weights("c", n, k, 9);
        inits.extend(more);
        let add = NodeProto {
            input: vec!["b".into(), "c".into()],
            output: vec!["bc".into()],
            name: "bc".into(),
            op_type: "Add".into(),
            ..Default::default()
        };
        let nodes = vec![
            nbits("a", "x", n, k),
            nbits("b", "x", n, k),
            nbits("c", "x", n, k),
            add,
        ];
        let mut proto = model(nodes, inits, &["a", "bc"]);
        let x: Vec<f32> = (0..2 * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let blocks = run(&proto, &x, k);

        assert_eq!(expand(&mut proto).unwrap(), 2);
        let graph = proto.graph.as_ref().unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["MatMul", "MatMul"]);
        assert_eq!(graph.initializer.len(), 2, "codes and scales are dropped");
        let expanded = run(&proto, &x, k);

        let expect = |w: &dyn Fn(usize) -> f32| -> Vec<f32> {
            (0..2)
                .flat_map(|r| (0..n).map(move |c| (r, c)))
                .map(|(r, c)| (0..k).map(|i| x[r * k + i] * w(c * k + i)).sum())
                .collect()
        };
        let want = [expect(&|i| w1[i]), expect(&|i| w2[i] + w3[i])];
        for (got, want) in [&blocks, &expanded]
            .into_iter()
            .flat_map(|g| g.iter().zip(&want))
        {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-3, "{g} != {w}");
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_expand() {
        let (n, k) = (2, 32);
        let (inits, _) = weights("a", n, k, 3);
        let mut node = nbits("a", "x", n, k);
        node.input.push("zero_points".into());
        let err = expand(&mut model(vec![node], inits.clone(), &["a"])).unwrap_err();
        assert!(format!("{err:#}").contains("default zero point"), "{err:#}");

        let mut node = nbits("a", "x", n, k);
        node.attribute
            .iter_mut()
            .find(|a| a.name == "block_size")
            .unwrap()
            .i = 64;
        let err = expand(&mut model(vec![node], inits.clone(), &["a"])).unwrap_err();
        assert!(format!("{err:#}").contains("blocks of 32"), "{err:#}");

        let mut short = inits;
        short[0].raw_data.pop();
        let err = expand(&mut model(vec![nbits("a", "x", n, k)], short, &["a"])).unwrap_err();
        assert!(format!("{err:#}").contains("do not fit"), "{err:#}");
    }
}
