package com.mobile_distill.core

import org.json.JSONObject

enum class Layout { NHWC, NCHW }

enum class DType { FLOAT32, UINT8 }

/** The input an exported file expects, exactly as `model.json` records it. */
data class InputSpec(val size: Int, val layout: Layout, val dtype: DType) {
    /** Bytes of one input image. */
    val byteCount: Int get() = size * size * 3 * (if (dtype == DType.FLOAT32) 4 else 1)
}

/**
 * The parts of `model.json` (written by `mdistill export --android`) the app needs: which file
 * to run, its input contract and its embedding size. Normalisation is inside the model, so the
 * app never needs mean/std.
 */
data class ModelCard(
    val architecture: String,
    val embeddingDim: Int,
    val modelFile: String,
    val input: InputSpec,
) {
    companion object {
        fun parse(json: String): ModelCard {
            val root = JSONObject(json)
            val model = root.getJSONObject("model")
            val artifact = if (root.has("artifact")) root.getJSONObject("artifact")
                else root.getJSONArray("artifacts").getJSONObject(0)
            val input = artifact.getJSONObject("input")
            val shape = input.getJSONArray("shape")
            val layout = Layout.valueOf(input.getString("layout").uppercase())
            val size = if (layout == Layout.NHWC) shape.getInt(1) else shape.getInt(2)
            require(shape.length() == 4 && shape.getInt(0) == 1) { "expected a (1, ...) image input, got $shape" }
            val dtype = DType.valueOf(input.getString("dtype").uppercase())
            return ModelCard(model.getString("architecture"), model.getInt("embedding_dim"),
                artifact.getString("file"), InputSpec(size, layout, dtype))
        }
    }
}
