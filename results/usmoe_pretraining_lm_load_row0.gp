set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row0.png.tmp.22593'
$m << EOD
0.156128 0.145264 0.170166 0.0899658 0.175171 0.115601 0.0882568 0.0594482
0.130371 0.0917969 0.0684814 0.223633 0.131104 0.173218 0.0894775 0.0919189
EOD
set title "Token choice, k=1: load (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
