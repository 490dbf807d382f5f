package com.mobile_distill.core

import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assume.assumeTrue
import org.junit.Test
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * Cross-language golden tests: Python (mobile_distill.export.android.write_golden) wrote real
 * images, the exact input bytes the exported model expects for several input specs, and a
 * retrieval case; Kotlin must reproduce the bytes bit for bit and the top-k order exactly.
 * The fixtures folder comes from the system property / env var MDISTILL_GOLDEN_DIR.
 */
class GoldenTest {
    private val dir: File? = (System.getProperty("MDISTILL_GOLDEN_DIR") ?: System.getenv("MDISTILL_GOLDEN_DIR"))?.let(::File)

    private fun golden(): JSONObject {
        assumeTrue("MDISTILL_GOLDEN_DIR not set", dir != null)
        return JSONObject(File(dir, "golden.json").readText())
    }

    @Test
    fun inputTensorsMatchPythonBitForBit() {
        val g = golden()
        val images = g.getJSONArray("images")
        val specs = g.getJSONArray("specs")
        assertTrue(images.length() > 0 && specs.length() > 0)
        for (i in 0 until images.length()) {
            val img = images.getJSONObject(i)
            val w = img.getInt("width")
            val h = img.getInt("height")
            val raw = ByteBuffer.wrap(File(dir, img.getString("argb")).readBytes()).order(ByteOrder.LITTLE_ENDIAN)
            val argb = IntArray(w * h) { raw.int }
            for (j in 0 until specs.length()) {
                val s = specs.getJSONObject(j)
                val spec = InputSpec(s.getInt("size"), Layout.valueOf(s.getString("layout")), DType.valueOf(s.getString("dtype")))
                val buf = Preprocess.toInput(Preprocess.resize(argb, w, h, spec.size), spec)
                val got = ByteArray(buf.remaining()).also { buf.get(it) }
                val want = File(dir, "image${i}_spec$j.bin").readBytes()
                assertArrayEquals("image $i, spec $s", want, got)
            }
        }
    }

    @Test
    fun topKMatchesPythonExactly() {
        val r = golden().getJSONObject("retrieval")
        val dim = r.getInt("dim")
        fun floats(name: String): FloatArray {
            val b = ByteBuffer.wrap(File(dir, name).readBytes()).order(ByteOrder.LITTLE_ENDIAN)
            return FloatArray(b.remaining() / 4) { b.float }
        }
        val flat = floats("gallery.f32")
        val gallery = Array(r.getInt("count")) { i -> flat.copyOfRange(i * dim, (i + 1) * dim) }
        val hits = Retrieval.topK(floats("query.f32"), gallery, r.getInt("k"))
        val top = r.getJSONArray("top")
        val scores = r.getJSONArray("scores")
        assertEquals((0 until top.length()).map { top.getInt(it) }, hits.map { it.index })
        hits.forEachIndexed { i, hit -> assertEquals(scores.getDouble(i), hit.score, 0.0) }
    }
}
