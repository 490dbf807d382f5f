package com.mobile_distill.demo

import android.os.Build
import com.mobile_distill.core.Benchmark
import com.mobile_distill.core.ModelCard
import org.json.JSONObject
import java.io.File

/**
 * The device side of `mdistill bench --adb` (protocol: mobile_distill/bench/adb.py). Reads
 * model.tflite, model.json, images.u8 and images.json from [dir], writes result.json and
 * embeddings.f32, and creates `done` last so the host never pulls half-written files.
 */
object BenchmarkMode {
    const val EXTRA_MODE = "mdistill.mode"
    const val EXTRA_DIR = "mdistill.dir"
    const val EXTRA_WARMUP = "mdistill.warmup"
    const val EXTRA_RUNS = "mdistill.runs"
    const val EXTRA_THREADS = "mdistill.threads"

    fun run(dir: File, warmup: Int, runs: Int, threads: Int) {
        File(dir, "done").delete()
        val card = ModelCard.parse(File(dir, "model.json").readText())
        val meta = JSONObject(File(dir, "images.json").readText())
        val device = mapOf("model" to Build.MODEL, "manufacturer" to Build.MANUFACTURER,
            "android" to Build.VERSION.RELEASE, "sdk" to Build.VERSION.SDK_INT.toString(),
            "abi" to Build.SUPPORTED_ABIS.firstOrNull().orEmpty())
        val embedder = LiteRtEmbedder(Assets.direct(File(dir, "model.tflite").readBytes()), threads)
        val result = embedder.use {
            Benchmark.run(it, card.input, File(dir, "images.u8").readBytes(), meta.getInt("count"), warmup, runs,
                threads, device)
        }
        File(dir, "embeddings.f32").writeBytes(result.embeddingBytes())
        File(dir, "result.json").writeText(result.resultJson())
        File(dir, "done").writeText("")
    }
}
