package com.mobile_distill.core

import org.json.JSONArray
import org.json.JSONObject
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
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
        println("golden ran: inputTensorsMatchPythonBitForBit (${images.length()} images x ${specs.length()} specs)")
    }

    @Test
    fun photosTurnUprightAsPythonShowsThem() {
        val cases = golden().getJSONArray("orientations")
        assertEquals(8, cases.length())
        fun pixels(name: String): IntArray {
            val raw = ByteBuffer.wrap(File(dir, name).readBytes()).order(ByteOrder.LITTLE_ENDIAN)
            return IntArray(raw.remaining() / 4) { raw.int }
        }
        for (i in 0 until cases.length()) {
            val c = cases.getJSONObject(i)
            val n = c.getInt("orientation")
            assertEquals("EXIF orientation of ${c.getString("jpeg")}", n, Orientation.fromJpeg(File(dir, c.getString("jpeg")).readBytes()))
            val up = Orientation.upright(pixels("orient${n}_decoded.argb"), c.getInt("width"), c.getInt("height"), n)
            assertEquals("width, orientation $n", c.getInt("upright_width"), up.width)
            assertEquals("height, orientation $n", c.getInt("upright_height"), up.height)
            assertArrayEquals("pixels, orientation $n", pixels("orient${n}_upright.argb"), up.argb)
        }
        println("golden ran: photosTurnUprightAsPythonShowsThem (${cases.length()} orientations)")
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
        println("golden ran: topKMatchesPythonExactly (k=${hits.size})")
    }

    /** result.json as `mdistill bench --adb` reads it: the field table comes from Python
     *  (mobile_distill.runtime.spec.DEVICE_RESULT_FIELDS), through golden.json. */
    @Test
    fun resultJsonKeepsThePythonContract() {
        val contract = golden().getJSONObject("result_contract")
        val r = BenchmarkResult(doubleArrayOf(1.0, 2.0), arrayOf(floatArrayOf(1f, 0f)), 2, mapOf("model" to "jvm"))
        val json = JSONObject(r.resultJson())
        assertTrue(contract.length() > 0)
        val names = contract.names()  // org.json as on Android: no keySet()
        for (key in (0 until names.length()).map { names.getString(it) }) {
            assertTrue("result.json has no $key", json.has(key))
            val value = json.get(key)
            when (val type = contract.getString(key)) {
                "array" -> assertTrue("$key is not a JSON array", value is JSONArray)
                "int" -> assertTrue("$key is not a JSON int", value is Int)
                "object" -> assertTrue("$key is not a JSON object", value is JSONObject)
                else -> fail("unknown type $type for $key")
            }
        }
        println("golden ran: resultJsonKeepsThePythonContract (${contract.length()} fields)")
    }
}
