package com.mobile_distill.core

import org.json.JSONObject
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** One gallery image: its name, class label and thumbnail path (relative to the assets folder). */
data class GalleryItem(val name: String, val label: String, val image: String)

/**
 * Who embedded the gallery: `student` (the exported model, on the app's own preprocessing) or
 * `teacher` (the server's index that a compatible student's queries search; already centred when
 * the student's training centred the teacher, so a plain cosine scores it). Absent in older assets:
 * the student.
 */
data class GalleryEmbedding(val kind: String, val model: String, val centred: Boolean) {
    val isTeacher get() = kind == "teacher"
}

/**
 * The gallery `mdistill export --android` writes: `gallery.json`
 * (`{"count", "dim", "embedding": {"kind", "model", "centred"}, "items": [{"name", "label", "image"}]}`)
 * and `gallery_embeddings.f32` (count x dim little-endian float32, row i = items[i]).
 */
class Gallery(
    val items: List<GalleryItem>,
    val embeddings: Array<FloatArray>,
    val embedding: GalleryEmbedding = GalleryEmbedding("student", "", false),
) {
    init {
        require(items.size == embeddings.size) { "${items.size} items but ${embeddings.size} embeddings" }
    }

    fun search(query: FloatArray, k: Int): List<Pair<GalleryItem, Hit>> =
        Retrieval.topK(query, embeddings, k).map { items[it.index] to it }

    companion object {
        fun parse(json: String, embeddingBytes: ByteArray): Gallery {
            val root = JSONObject(json)
            val count = root.getInt("count")
            val dim = root.getInt("dim")
            require(embeddingBytes.size == count * dim * 4) {
                "gallery_embeddings.f32 has ${embeddingBytes.size} bytes, expected $count x $dim float32"
            }
            val arr = root.getJSONArray("items")
            val items = List(arr.length()) { i ->
                val o = arr.getJSONObject(i)
                GalleryItem(o.getString("name"), o.getString("label"), o.getString("image"))
            }
            val buf = ByteBuffer.wrap(embeddingBytes).order(ByteOrder.LITTLE_ENDIAN)
            val emb = Array(count) { FloatArray(dim) { buf.float } }
            val e = root.optJSONObject("embedding")
            val kind = e?.optString("kind", "student") ?: "student"
            require(kind == "student" || kind == "teacher") { "gallery.json: unknown embedding kind '$kind'" }
            return Gallery(items, emb, GalleryEmbedding(kind, e?.optString("model", "") ?: "", e?.optBoolean("centred", false) ?: false))
        }
    }
}
