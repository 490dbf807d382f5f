package com.mobile_distill.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.nio.ByteBuffer
import java.nio.ByteOrder

class CardGalleryRetrievalTest {
    private val card = """{"model": {"architecture": "mobilenet_v1_025", "embedding_dim": 4, "image_size": 64},
        "artifact": {"format": "tflite", "precision": "float32", "file": "student_float32.tflite",
        "input": {"shape": [1, 64, 64, 3], "layout": "NHWC", "dtype": "float32", "value_range": [0, 1]}}}"""

    @Test
    fun modelCardReadsTheInputContract() {
        val c = ModelCard.parse(card)
        assertEquals("student_float32.tflite", c.modelFile)
        assertEquals(InputSpec(64, Layout.NHWC, DType.FLOAT32), c.input)
        assertEquals(4, c.embeddingDim)
        assertEquals(64 * 64 * 3 * 4, c.input.byteCount)
    }

    @Test
    fun nchwUint8CardAndArtifactsList() {
        val c = ModelCard.parse("""{"model": {"architecture": "a", "embedding_dim": 2},
            "artifacts": [{"file": "m.tflite", "input": {"shape": [1, 3, 32, 32], "layout": "NCHW", "dtype": "uint8"}}]}""")
        assertEquals(InputSpec(32, Layout.NCHW, DType.UINT8), c.input)
    }

    @Test
    fun galleryParsesAndSearchesBestFirst() {
        val buf = ByteBuffer.allocate(3 * 2 * 4).order(ByteOrder.LITTLE_ENDIAN)
        floatArrayOf(1f, 0f, 0f, 1f, 0.6f, 0.8f).forEach { buf.putFloat(it) }
        val g = Gallery.parse("""{"count": 3, "dim": 2, "items": [
            {"name": "a", "label": "x", "image": "gallery/0.png"}, {"name": "b", "label": "y", "image": "gallery/1.png"},
            {"name": "c", "label": "z", "image": "gallery/2.png"}]}""", buf.array())
        val hits = g.search(floatArrayOf(0f, 2f), 2)
        assertEquals(listOf("b", "c"), hits.map { it.first.name })
        assertEquals(1.0, hits[0].second.score, 1e-12)
        assertEquals(0.8, hits[1].second.score, 1e-6)
    }

    @Test
    fun galleryReadsWhoEmbeddedIt() {
        val bytes = ByteArray(2 * 4)
        val old = Gallery.parse("""{"count": 1, "dim": 2, "items": [{"name": "a", "label": "x", "image": "g/0.png"}]}""", bytes)
        assertEquals(GalleryEmbedding("student", "", false), old.embedding)
        val served = Gallery.parse("""{"count": 1, "dim": 2, "embedding": {"kind": "teacher", "model": "teacher.pt",
            "centred": true}, "items": [{"name": "a", "label": "x", "image": "g/0.png"}]}""", bytes)
        assertTrue(served.embedding.isTeacher)
        assertEquals("teacher.pt", served.embedding.model)
        assertTrue(served.embedding.centred)
    }

    @Test(expected = IllegalArgumentException::class)
    fun galleryWithAnUnknownEmbeddingKindIsRefused() {
        Gallery.parse("""{"count": 0, "dim": 2, "embedding": {"kind": "server"}, "items": []}""", ByteArray(0))
    }

    @Test(expected = IllegalArgumentException::class)
    fun galleryWithWrongByteCountIsRefused() {
        Gallery.parse("""{"count": 2, "dim": 2, "items": []}""", ByteArray(12))
    }

    @Test
    fun benchmarkTimesEveryRunAndEmbedsEveryImage() {
        val spec = InputSpec(2, Layout.NHWC, DType.UINT8)
        val embedder = object : Embedder {
            override val embeddingDim = 1
            var calls = 0
            override fun embed(input: ByteBuffer): FloatArray { calls++; return floatArrayOf((input.get(0).toInt() and 0xFF).toFloat()) }
            override fun close() {}
        }
        val images = ByteArray(3 * 12) { (it / 12 * 10).toByte() }  // image i is all 10*i
        var t = 0L
        val r = Benchmark.run(embedder, spec, images, 3, warmup = 2, runs = 5, threads = 1,
            device = mapOf("model" to "jvm"), clock = { t += 1_500_000; t })
        assertEquals(listOf(0f, 10f, 20f), r.embeddings.map { it[0] })
        assertEquals(3 + 2 + 5, embedder.calls)
        assertEquals(5, r.latencyMs.size)
        r.latencyMs.forEach { assertEquals(1.5, it, 1e-9) }
        assertEquals(3 * 4, r.embeddingBytes().size)
        assertTrue(r.resultJson().contains("\"embedding_dim\":1"))
    }
}
