package com.mobile_distill.core

import org.json.JSONArray
import org.json.JSONObject
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** What the benchmark mode writes back to `mdistill bench --adb` (mobile_distill/bench/adb.py). */
class BenchmarkResult(val latencyMs: DoubleArray, val embeddings: Array<FloatArray>, val threads: Int,
                      val device: Map<String, String>) {
    fun resultJson(): String = JSONObject()
        .put("latency_ms", JSONArray(latencyMs.toList()))
        .put("count", embeddings.size)
        .put("embedding_dim", embeddings.firstOrNull()?.size ?: 0)
        .put("threads", threads)
        .put("device", JSONObject(device))
        .toString()

    /** count x dim little-endian float32, in image order. */
    fun embeddingBytes(): ByteArray {
        val dim = embeddings.firstOrNull()?.size ?: 0
        val buf = ByteBuffer.allocate(embeddings.size * dim * 4).order(ByteOrder.LITTLE_ENDIAN)
        for (row in embeddings) for (v in row) buf.putFloat(v)
        return buf.array()
    }
}

/** The benchmark protocol's device side, free of Android: images in, timings and embeddings out. */
object Benchmark {
    /**
     * @param images raw uint8 RGB, count x size x size x 3 (`images.u8`)
     * @param clock nanosecond clock (System::nanoTime on the phone)
     */
    fun run(embedder: Embedder, spec: InputSpec, images: ByteArray, count: Int, warmup: Int, runs: Int,
            threads: Int, device: Map<String, String>, clock: () -> Long = System::nanoTime): BenchmarkResult {
        val pixels = spec.size * spec.size
        require(images.size == count * pixels * 3) { "images.u8 has ${images.size} bytes, expected $count x ${spec.size}^2 x 3" }
        val inputs = List(count) { Preprocess.toInput(Preprocess.rgbBytesToArgb(images, it * pixels * 3, pixels), spec) }
        val embeddings = Array(count) { embedder.embed(inputs[it].also { b -> b.rewind() }) }
        repeat(warmup) { embedder.embed(inputs[it % count].also { b -> b.rewind() }) }
        val latency = DoubleArray(runs) {
            val input = inputs[it % count].also { b -> b.rewind() }
            val start = clock()
            embedder.embed(input)
            (clock() - start) / 1e6
        }
        return BenchmarkResult(latency, embeddings, threads, device)
    }
}
