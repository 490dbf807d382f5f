package com.mobile_distill.demo

import android.content.Context
import com.mobile_distill.core.Gallery
import com.mobile_distill.core.ModelCard
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** Reads what `mdistill export --android` put in `src/main/assets`. */
class Assets(private val context: Context) {
    val card: ModelCard = ModelCard.parse(text("model.json"))
    val gallery: Gallery = Gallery.parse(text("gallery.json"), bytes("gallery_embeddings.f32"))

    fun model(): ByteBuffer = direct(bytes(card.modelFile))

    fun open(path: String) = context.assets.open(path)

    private fun text(name: String) = context.assets.open(name).use { String(it.readBytes(), Charsets.UTF_8) }

    private fun bytes(name: String) = context.assets.open(name).use { it.readBytes() }

    companion object {
        fun direct(bytes: ByteArray): ByteBuffer =
            ByteBuffer.allocateDirect(bytes.size).order(ByteOrder.nativeOrder()).put(bytes).also { it.rewind() }

        fun readFile(file: File): ByteArray = file.readBytes()
    }
}
